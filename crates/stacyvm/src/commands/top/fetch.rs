//! Keeping the model live: one task follows `GET /events` (the web console's stream) and one
//! fetches the sandbox and worker lists, at once when an event may have changed them and at
//! least every [`REFRESH`] (heartbeats are not events). Actions (destroy) run as tasks of
//! their own. Everything reaches the UI as [`Update`]s on one channel; every task is owned by
//! the [`Fetcher`] and ends on [`Fetcher::shutdown`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::model::{
    changes_lists, event_from, sandboxes_from, take_sse, workers_from, Stream, Update,
};
use crate::commands::client::Client;

/// The lists are fetched at least this often (worker heartbeats send no event).
const REFRESH: Duration = Duration::from_secs(3);
/// Reconnecting to the event stream backs off from the first delay to the last.
const RECONNECT: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));
/// One list fetch or action may take this long before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for the tasks to notice the cancellation.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Fetcher {
    client: Arc<Client>,
    updates: mpsc::UnboundedSender<Update>,
    refresh: Arc<Notify>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Fetcher {
    /// Starts the event and list tasks on the current runtime; updates arrive on the receiver.
    pub(super) fn start(client: Client) -> (Fetcher, mpsc::UnboundedReceiver<Update>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let f = Fetcher {
            client: Arc::new(client),
            updates: tx,
            refresh: Arc::new(Notify::new()),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let (c, u, r) = (f.client.clone(), f.updates.clone(), f.refresh.clone());
        f.tracker
            .spawn(f.cancel.clone().run_until_cancelled_owned(lists(c, u, r)));
        let (c, u, r) = (f.client.clone(), f.updates.clone(), f.refresh.clone());
        f.tracker
            .spawn(f.cancel.clone().run_until_cancelled_owned(events(c, u, r)));
        (f, rx)
    }

    /// Fetches the lists again now.
    pub(super) fn refresh(&self) {
        self.refresh.notify_one();
    }

    /// Destroys a sandbox; the outcome arrives as an [`Update::Notice`], then the lists.
    pub(super) fn destroy(&self, id: String) {
        let (client, updates, refresh) = (
            self.client.clone(),
            self.updates.clone(),
            self.refresh.clone(),
        );
        let task = async move {
            let path = format!("/sandboxes/{id}");
            let call = client.delete(&path);
            let notice = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(v)) if v["state"] == "destroying" => Ok(format!(
                    "{id} destroying (its worker is unreachable; finished when it returns)"
                )),
                Ok(Ok(_)) => Ok(format!("{id} destroyed")),
                Ok(Err(e)) => Err(format!("destroy {id}: {e:#}")),
                Err(_) => Err(format!("destroy {id}: no answer in {CALL_TIMEOUT:?}")),
            };
            let _ = updates.send(Update::Notice(notice));
            refresh.notify_one();
        };
        self.tracker
            .spawn(self.cancel.clone().run_until_cancelled_owned(task));
    }

    /// Stops every task and waits (bounded) for them to end.
    pub(super) async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.tracker.wait()).await;
    }
}

async fn get(client: &Client, path: &str) -> Result<Value, String> {
    match tokio::time::timeout(CALL_TIMEOUT, client.call(reqwest::Method::GET, path, None)).await {
        Ok(r) => r.map_err(|e| format!("{e:#}")),
        Err(_) => Err(format!("GET {path}: no answer in {CALL_TIMEOUT:?}")),
    }
}

/// Fetches both lists on every tick or refresh request, until the UI hangs up.
async fn lists(client: Arc<Client>, updates: mpsc::UnboundedSender<Update>, refresh: Arc<Notify>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = refresh.notified() => tick.reset(),
        }
        let (s, w) = tokio::join!(get(&client, "/sandboxes"), get(&client, "/workers"));
        let sent = updates
            .send(Update::Sandboxes(s.map(|v| sandboxes_from(&v))))
            .and_then(|()| updates.send(Update::Workers(w.map(|v| workers_from(&v)))));
        if sent.is_err() {
            return;
        }
    }
}

/// Follows the event stream, reconnecting with backoff; each event goes to the UI, and one
/// that may change the lists asks for them again.
async fn events(client: Arc<Client>, updates: mpsc::UnboundedSender<Update>, refresh: Arc<Notify>) {
    let mut delay = RECONNECT.0;
    loop {
        let open = tokio::time::timeout(CALL_TIMEOUT, client.get_stream("/events")).await;
        let down =
            match open.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {CALL_TIMEOUT:?}"))) {
                Ok(resp) => {
                    delay = RECONNECT.0;
                    if updates.send(Update::Stream(Stream::Live)).is_err() {
                        return;
                    }
                    // Whatever changed while the stream was down.
                    refresh.notify_one();
                    let mut body = resp.bytes_stream();
                    let mut buf = Vec::new();
                    loop {
                        match body.next().await {
                            Some(Ok(chunk)) => {
                                buf.extend_from_slice(&chunk);
                                for data in take_sse(&mut buf) {
                                    let Ok(v) = serde_json::from_str::<Value>(&data) else {
                                        continue; // a malformed event is skipped, not fatal
                                    };
                                    let ev = event_from(&v);
                                    if changes_lists(&ev.kind) {
                                        refresh.notify_one();
                                    }
                                    if updates.send(Update::Event(ev)).is_err() {
                                        return;
                                    }
                                }
                            }
                            Some(Err(e)) => break format!("event stream: {e}"),
                            None => break "event stream closed by the server".to_string(),
                        }
                    }
                }
                Err(e) => format!("event stream: {e:#}"),
            };
        if updates.send(Update::Stream(Stream::Down(down))).is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT.1);
    }
}
