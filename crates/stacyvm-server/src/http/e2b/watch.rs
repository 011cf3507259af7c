//! `filesystem.Filesystem` watches over `svc.files().watch` (inotify in the sandbox's agent):
//! `WatchDir` as a server stream (the async SDK), and the polling watchers `CreateWatcher`,
//! `GetWatcherEvents`, `RemoveWatcher` (the sync SDK), whose events are buffered here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use stacyvm_types::{SandboxId, WatchEvent, WatchKind};
use tokio_util::sync::CancellationToken;

use super::connect::{self, Code, ConnectError};
use super::Call;

/// Events one polling watcher keeps between two polls; older ones are dropped.
const MAX_BUFFERED: usize = 10_000;
/// Polling watchers at once, over all sandboxes.
const MAX_WATCHERS: usize = 1_000;

#[derive(Deserialize, Default)]
#[serde(default)]
struct WatchRequest {
    path: String,
    recursive: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WatcherRequest {
    watcher_id: String,
}

/// envd's `FilesystemEvent` (no `entry`: that is envd 0.6.3, newer than we claim).
#[derive(Serialize)]
struct FsEvent<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

fn event_type(k: WatchKind) -> &'static str {
    match k {
        WatchKind::Create => "EVENT_TYPE_CREATE",
        WatchKind::Write => "EVENT_TYPE_WRITE",
        WatchKind::Remove => "EVENT_TYPE_REMOVE",
        WatchKind::Rename => "EVENT_TYPE_RENAME",
        WatchKind::Chmod => "EVENT_TYPE_CHMOD",
    }
}

fn fs_event(e: &WatchEvent) -> FsEvent<'_> {
    FsEvent {
        name: &e.name,
        kind: event_type(e.kind),
    }
}

/// One polling watcher: its sandbox, the events since the last poll, and its task's stop.
struct Watcher {
    sandbox: SandboxId,
    events: Arc<Mutex<Vec<WatchEvent>>>,
    /// Set when the watch ended (the directory went, the sandbox went).
    ended: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

/// The polling watchers of this control plane (they live as long as their watch task).
#[derive(Default)]
pub struct Watchers(Mutex<HashMap<String, Watcher>>);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub async fn call(c: &Call<'_>, method: &str) -> Option<Response> {
    let res = match method {
        "WatchDir" => watch_dir(c).await,
        "CreateWatcher" => create(c).await,
        "GetWatcherEvents" => poll(c),
        "RemoveWatcher" => remove(c),
        _ => return None,
    };
    Some(c.answer(res))
}

async fn open(c: &Call<'_>) -> Result<stacyvm_provider::WatchStream, ConnectError> {
    let req: WatchRequest = c.decode()?;
    let path = c.t.resolve(&req.path);
    c.st.svc
        .files()
        .watch(&c.t.id, &path, req.recursive)
        .await
        .map_err(|e| match e {
            crate::error::ServiceError::FileNotFound(_) => {
                ConnectError::new(Code::NotFound, format!("path {path:?} does not exist"))
            }
            other => other.into(),
        })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum WatchDirEvent<'a> {
    Start {},
    Filesystem(FsEvent<'a>),
    Keepalive {},
}

/// `WatchDirResponse` holds its oneof directly (`{"start":{}}`), unlike `StartResponse`.
fn frame(e: WatchDirEvent<'_>) -> Bytes {
    connect::message(&e)
}

/// `start`, then an event per change and keepalives while idle, until the watch ends. The
/// body owns the watch: a client that leaves drops it, which ends the watch in the sandbox at
/// once (no task of its own to outlive the request).
async fn watch_dir(c: &Call<'_>) -> Result<Response, ConnectError> {
    let events = open(c).await?;
    let idle = Duration::from_secs(connect::keepalive_secs(c.h));
    // `None` = not started yet; `Some(false)` = streaming; `Some(true)` = ended.
    let stream = futures_util::stream::unfold((events, None), move |(mut events, st)| async move {
        let out = match st {
            Some(true) => return None,
            None => {
                return Some((
                    Ok::<_, std::convert::Infallible>(frame(WatchDirEvent::Start {})),
                    (events, Some(false)),
                ))
            }
            Some(false) => match tokio::time::timeout(idle, events.next()).await {
                Err(_) => (frame(WatchDirEvent::Keepalive {}), false),
                Ok(Some(Ok(e))) => (frame(WatchDirEvent::Filesystem(fs_event(&e))), false),
                Ok(Some(Err(e))) => (
                    ConnectError::from(crate::error::ServiceError::from(e)).end_stream(),
                    true,
                ),
                Ok(None) => (connect::end_ok(), true),
            },
        };
        Some((Ok(out.0), (events, Some(out.1))))
    });
    Ok(connect::stream_response(Body::from_stream(stream)))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    watcher_id: String,
}

async fn create(c: &Call<'_>) -> Result<Response, ConnectError> {
    if locked(&c.st.e2b_watchers.0).len() >= MAX_WATCHERS {
        return Err(ConnectError::new(
            Code::ResourceExhausted,
            format!("at most {MAX_WATCHERS} watchers at once"),
        ));
    }
    let mut stream = open(c).await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(Mutex::new(None));
    let stop = CancellationToken::new();
    let (buf, end, token) = (events.clone(), ended.clone(), stop.clone());
    c.st.svc.spawn_until_shutdown(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                next = stream.next() => match next {
                    Some(Ok(e)) => {
                        let mut b = locked(&buf);
                        if b.len() >= MAX_BUFFERED {
                            b.remove(0);
                        }
                        b.push(e);
                    }
                    Some(Err(e)) => {
                        *locked(&end) = Some(e.to_string());
                        break;
                    }
                    None => {
                        *locked(&end) = Some("the watched directory is gone".into());
                        break;
                    }
                },
            }
        }
    });
    locked(&c.st.e2b_watchers.0).insert(
        id.clone(),
        Watcher {
            sandbox: c.t.id.clone(),
            events,
            ended,
            stop,
        },
    );
    Ok(connect::unary_ok(&Created { watcher_id: id }))
}

#[derive(Serialize)]
struct Polled<'a> {
    events: Vec<FsEvent<'a>>,
}

fn poll(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: WatcherRequest = c.decode()?;
    let mut all = locked(&c.st.e2b_watchers.0);
    let w = all
        .get(&req.watcher_id)
        .filter(|w| w.sandbox == c.t.id)
        .ok_or_else(|| ConnectError::new(Code::NotFound, "watcher not found"))?;
    let events = std::mem::take(&mut *locked(&w.events));
    let ended = locked(&w.ended).clone();
    if let (true, Some(why)) = (events.is_empty(), ended) {
        all.remove(&req.watcher_id);
        return Err(ConnectError::new(
            Code::NotFound,
            format!("watcher ended: {why}"),
        ));
    }
    Ok(connect::unary_ok(&Polled {
        events: events.iter().map(fs_event).collect(),
    }))
}

#[derive(Serialize)]
struct Empty {}

fn remove(c: &Call<'_>) -> Result<Response, ConnectError> {
    let req: WatcherRequest = c.decode()?;
    let mut all = locked(&c.st.e2b_watchers.0);
    match all.get(&req.watcher_id) {
        Some(w) if w.sandbox == c.t.id => {
            w.stop.cancel();
            all.remove(&req.watcher_id);
            Ok(connect::unary_ok(&Empty {}))
        }
        _ => Err(ConnectError::new(Code::NotFound, "watcher not found")),
    }
}
