#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use stacyvm_store::Store;

use super::*;

fn event(kind: EventKind, sandbox: &str, data_len: usize) -> Event {
    let data = EventData::failure("exec", "mock", "e".repeat(data_len));
    Event {
        id: "evt-1".into(),
        kind,
        sandbox_id: Some(sandbox.into()),
        timestamp: chrono::Utc::now(),
        data: Some(data),
        remote: false,
    }
}

#[test]
fn payloads_fit_the_limit_and_keep_every_event_in_order() {
    let events: Vec<Event> = (0..200)
        .map(|i| event(EventKind::ExecFailed, &format!("sb-{i:08x}"), 100))
        .collect();
    let out = payloads("cp-a", &events);
    assert!(
        out.len() > 1,
        "200 events of ~200 bytes need several payloads"
    );
    let mut seen = Vec::new();
    for p in &out {
        assert!(p.len() <= MAX_EVENT_PAYLOAD, "{} bytes", p.len());
        let v: Value = serde_json::from_str(p).unwrap();
        assert_eq!(v["origin"], "cp-a");
        for e in v["events"].as_array().unwrap() {
            seen.push(e["sandbox_id"].as_str().unwrap().to_string());
        }
    }
    let want: Vec<String> = (0..200).map(|i| format!("sb-{i:08x}")).collect();
    assert_eq!(seen, want);
}

#[test]
fn an_event_too_large_is_not_forwarded_but_the_rest_are() {
    let events = vec![
        event(EventKind::ExecFailed, "sb-00000001", 10),
        event(EventKind::ExecFailed, "sb-00000002", MAX_EVENT_PAYLOAD),
        event(EventKind::ExecFailed, "sb-00000003", 10),
    ];
    let out = payloads("cp-a", &events);
    assert_eq!(out.len(), 1);
    assert!(out[0].contains("sb-00000001") && out[0].contains("sb-00000003"));
    assert!(!out[0].contains("sb-00000002"));
}

#[test]
fn own_and_malformed_payloads_are_ignored() {
    let p = payloads(
        "cp-a",
        &[event(EventKind::SandboxCreated, "sb-00000001", 0)],
    );
    assert!(remote_events("cp-a", &p[0]).is_empty());
    let evs = remote_events("cp-b", &p[0]);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::SandboxCreated);
    assert!(evs[0].remote);
    assert_eq!(evs[0].sandbox_id.as_deref(), Some("sb-00000001"));
    assert!(remote_events("cp-b", "not json").is_empty());
    assert!(remote_events("cp-b", r#"{"origin":"x","events":[{"nope":1}]}"#).is_empty());
}

/// Collects what `rx` receives within `window`.
async fn drain(rx: &mut broadcast::Receiver<Event>, window: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(window, async {
        while let Ok(ev) = rx.recv().await {
            out.push(ev);
        }
    })
    .await;
    out
}

mod needs_pg {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_buses_on_one_postgres_see_each_others_events_once() {
        let db = stacyvm_store::pg_test_db::TestDb::create().await;
        let (sa, sb) = (db.open().await, db.open().await);
        let (bus_a, bus_b) = (Arc::new(EventBus::new()), Arc::new(EventBus::new()));
        let cancel = CancellationToken::new();
        let remote_seen_by_b = Arc::new(AtomicU64::new(0));
        let tasks = [
            tokio::spawn({
                let (bus, bridge, c) = (bus_a.clone(), sa.event_bridge().unwrap(), cancel.clone());
                async move { run_bridge(&bus, bridge, "cp-a", c, |_| {}).await }
            }),
            tokio::spawn({
                let (bus, bridge, c) = (bus_b.clone(), sb.event_bridge().unwrap(), cancel.clone());
                let seen = remote_seen_by_b.clone();
                async move {
                    run_bridge(&bus, bridge, "cp-b", c, move |_| {
                        seen.fetch_add(1, Ordering::Relaxed);
                    })
                    .await
                }
            }),
        ];
        let mut rx_a = bus_a.subscribe();
        let mut rx_b = bus_b.subscribe();
        // Wait until both listeners are connected: probes from each side get through. The
        // probe is a kind nothing else in this test publishes.
        for (from, rx) in [(&bus_a, &mut rx_b), (&bus_b, &mut rx_a)] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                from.publish(EventKind::ResourceLimit, None, None);
                let got = drain(rx, Duration::from_millis(200)).await;
                if got
                    .iter()
                    .any(|e| e.kind == EventKind::ResourceLimit && e.remote)
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "bridge never connected"
                );
            }
        }
        drain(&mut rx_a, Duration::from_millis(300)).await;
        drain(&mut rx_b, Duration::from_millis(300)).await;
        let before_b = remote_seen_by_b.load(Ordering::Relaxed);

        bus_a.publish(EventKind::SandboxCreated, Some(&"sb-aaaaaaaa".into()), None);
        bus_b.publish(
            EventKind::ExecFailed,
            Some(&"sb-bbbbbbbb".into()),
            Some(EventData::failure("exec", "mock", "boom")),
        );
        let got_a = drain(&mut rx_a, Duration::from_secs(1)).await;
        let got_b = drain(&mut rx_b, Duration::from_secs(1)).await;
        let kinds = |evs: &[Event], remote: bool| -> Vec<String> {
            evs.iter()
                .filter(|e| e.remote == remote && e.kind != EventKind::ResourceLimit)
                .map(|e| format!("{} {}", e.kind, e.sandbox_id.as_deref().unwrap_or_default()))
                .collect()
        };
        // Each bus: its own event once (not echoed back), the other's once.
        assert_eq!(kinds(&got_a, false), ["sandbox.created sb-aaaaaaaa"]);
        assert_eq!(kinds(&got_a, true), ["exec.failed sb-bbbbbbbb"]);
        assert_eq!(kinds(&got_b, false), ["exec.failed sb-bbbbbbbb"]);
        assert_eq!(kinds(&got_b, true), ["sandbox.created sb-aaaaaaaa"]);
        let remote = got_a.iter().find(|e| e.remote).unwrap();
        let Some(EventData::Remote(data)) = &remote.data else {
            panic!("remote data: {:?}", remote.data);
        };
        assert_eq!(data["error"], "boom");
        assert_eq!(remote_seen_by_b.load(Ordering::Relaxed) - before_b, 1);

        cancel.cancel();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

/// Typed event data writes the bytes of the `json!` maps it replaced, and an event the bytes
/// of the map `/events` has always carried.
#[test]
fn event_wire_bytes() {
    let cases: Vec<(EventData, Value)> = vec![
        (
            EventData::failure("spawn", "mock", "boom"),
            json!({"operation":"spawn","provider":"mock","error":"boom"}),
        ),
        (
            EventData::Queue {
                depth: Some(3),
                error: None,
                operation: "spawn",
                owner_id: String::new(),
                provider: "mock".into(),
                wait_ms: None,
            },
            json!({"operation":"spawn","provider":"mock","owner_id":"","depth":3}),
        ),
        (
            EventData::Queue {
                depth: None,
                error: Some("spawn queue timeout after 1s".into()),
                operation: "spawn",
                owner_id: "alice".into(),
                provider: "mock".into(),
                wait_ms: Some(1000),
            },
            json!({"operation":"spawn","provider":"mock","owner_id":"alice",
                "error":"spawn queue timeout after 1s","wait_ms":1000}),
        ),
        (
            EventData::QuotaSaved {
                max_exec_timeout: "0s".into(),
                max_sandboxes: 2,
                max_ttl: "1h0m0s".into(),
                owner_id: "alice".into(),
            },
            json!({"owner_id": "alice", "max_sandboxes": 2, "max_ttl": "1h0m0s",
                "max_exec_timeout": "0s"}),
        ),
        (
            EventData::QuotaDeleted {
                owner_id: "alice".into(),
            },
            json!({"owner_id": "alice"}),
        ),
        (
            ReconcileAction::new("marked_destroyed")
                .provider("mock")
                .reason("creator_gone")
                .worker("w1")
                .into(),
            json!({"action": "marked_destroyed", "provider": "mock",
                "reason": "creator_gone", "worker": "w1"}),
        ),
        (
            ReconcileAction::new("worker_draining")
                .reason("admin_drain")
                .worker("w1")
                .into(),
            json!({"action": "worker_draining", "reason": "admin_drain", "worker": "w1"}),
        ),
    ];
    for (data, reference) in cases {
        assert_eq!(serde_json::to_string(&data).unwrap(), reference.to_string());
        let ev = Event {
            id: "evt-7".into(),
            kind: EventKind::ReconcileAction,
            sandbox_id: Some("sb-1".into()),
            timestamp: chrono::Utc::now(),
            data: Some(data),
            remote: false,
        };
        let mut m = Map::new();
        m.insert("id".into(), json!(ev.id));
        m.insert("type".into(), json!(ev.kind.as_str()));
        m.insert("sandbox_id".into(), json!("sb-1"));
        m.insert("timestamp".into(), json!(format_rfc3339_go(&ev.timestamp)));
        m.insert("data".into(), reference);
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            Value::Object(m).to_string()
        );
    }
    let bare = Event {
        id: "evt-1".into(),
        kind: EventKind::SandboxCreated,
        sandbox_id: None,
        timestamp: chrono::Utc::now(),
        data: None,
        remote: false,
    };
    let text = serde_json::to_string(&bare).unwrap();
    assert_eq!(
        text,
        json!({"id": "evt-1", "type": "sandbox.created",
            "timestamp": format_rfc3339_go(&bare.timestamp)})
        .to_string()
    );
    // What the bridge reads back is the same event.
    let back = Event::from_remote(&serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!((back.id, back.kind), (bare.id, bare.kind));
    // A kind this build does not know (a newer peer) is not shown.
    let newer = text.replace("sandbox.created", "sandbox.teleported");
    assert!(Event::from_remote(&serde_json::from_str(&newer).unwrap()).is_none());
}
