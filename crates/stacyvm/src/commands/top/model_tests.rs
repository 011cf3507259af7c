use chrono::{Duration, TimeZone, Utc};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::json;

use super::*;

fn sb(id: &str, created_secs: i64) -> SandboxRow {
    SandboxRow {
        id: id.into(),
        state: "running".into(),
        provider: "mock".into(),
        worker: String::new(),
        image: "alpine:latest".into(),
        created_at: Utc.timestamp_opt(created_secs, 0).single(),
        expires_at: None,
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn app_with(ids: &[(&str, i64)]) -> App {
    let mut app = App::default();
    app.apply(Update::Sandboxes(Ok(ids
        .iter()
        .map(|(id, t)| sb(id, *t))
        .collect())));
    app
}

#[test]
fn sandboxes_are_newest_first_and_the_selection_follows_its_row() {
    let mut app = app_with(&[("sb-old", 1), ("sb-new", 2)]);
    let ids: Vec<_> = app
        .visible_sandboxes()
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(ids, ["sb-new", "sb-old"]);
    app.move_by(1);
    assert_eq!(
        app.selected_sandbox().map(|s| s.id.as_str()),
        Some("sb-old")
    );
    // A newer sandbox arrives on top: the selection stays on sb-old.
    app.apply(Update::Sandboxes(Ok(vec![
        sb("sb-old", 1),
        sb("sb-new", 2),
        sb("sb-newest", 3),
    ])));
    assert_eq!(
        app.selected_sandbox().map(|s| s.id.as_str()),
        Some("sb-old")
    );
    // sb-old goes: the selection stays in range.
    app.apply(Update::Sandboxes(Ok(vec![sb("sb-new", 2)])));
    assert_eq!(
        app.selected_sandbox().map(|s| s.id.as_str()),
        Some("sb-new")
    );
    app.apply(Update::Sandboxes(Ok(vec![])));
    assert_eq!(app.selected_sandbox(), None);
    assert!(app.loaded);
}

#[test]
fn navigation_keys_stop_at_both_ends() {
    let mut app = app_with(&[("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)]);
    app.page = 2;
    let sel = |app: &App| app.selected[0];
    app.on_key(key(KeyCode::Char('k')));
    assert_eq!(sel(&app), 0);
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Char('j')));
    assert_eq!(sel(&app), 2);
    app.on_key(key(KeyCode::PageDown));
    assert_eq!(sel(&app), 4);
    app.on_key(key(KeyCode::PageDown));
    assert_eq!(sel(&app), 4);
    app.on_key(key(KeyCode::PageUp));
    app.on_key(key(KeyCode::Up));
    assert_eq!(sel(&app), 1);
    app.on_key(key(KeyCode::End));
    assert_eq!(sel(&app), 4);
    app.on_key(key(KeyCode::Home));
    assert_eq!(sel(&app), 0);
}

#[test]
fn tabs_switch_by_number_and_tab() {
    let mut app = App::default();
    app.on_key(key(KeyCode::Char('2')));
    assert_eq!(app.tab, Tab::Workers);
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.tab, Tab::Events);
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.tab, Tab::Sandboxes);
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.tab, Tab::Events);
    app.on_key(key(KeyCode::Char('1')));
    assert_eq!(app.tab, Tab::Sandboxes);
}

#[test]
fn quit_enter_and_destroy_confirmation() {
    let mut app = app_with(&[("sb-1", 1)]);
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        Action::Shell("sb-1".into())
    );
    assert_eq!(app.on_key(key(KeyCode::Char('d'))), Action::None);
    assert_eq!(app.mode, Mode::ConfirmDestroy("sb-1".into()));
    // Anything but y cancels; q here answers the prompt, it does not quit.
    assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::None);
    assert_eq!(app.mode, Mode::Normal);
    app.on_key(key(KeyCode::Char('d')));
    assert_eq!(
        app.on_key(key(KeyCode::Char('y'))),
        Action::Destroy("sb-1".into())
    );
    assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    app.on_key(key(KeyCode::Char('/')));
    assert_eq!(app.on_key(ctrl_c), Action::Quit);
    // Enter and d do nothing outside the sandbox view.
    let mut app = app_with(&[("sb-1", 1)]);
    app.on_key(key(KeyCode::Char('2')));
    assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
    app.on_key(key(KeyCode::Char('d')));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn the_filter_narrows_the_current_view_as_it_is_typed() {
    let mut app = app_with(&[("sb-apple", 1), ("sb-berry", 2)]);
    app.on_key(key(KeyCode::Char('/')));
    for c in "APP".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(app.mode, Mode::Filter);
    // Typed keys go to the filter, not to the tab switch or quit.
    assert_eq!(app.tab, Tab::Sandboxes);
    let ids: Vec<_> = app
        .visible_sandboxes()
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(ids, ["sb-apple"]);
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.filter, "APP");
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.filter, "");
    assert_eq!(app.visible_sandboxes().len(), 2);
    app.on_key(key(KeyCode::Char('/')));
    app.on_key(key(KeyCode::Char('x')));
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Esc));
    assert_eq!((app.filter.as_str(), &app.mode), ("", &Mode::Normal));
}

#[test]
fn events_are_newest_first_and_capped() {
    let mut app = App::default();
    for i in 0..EVENT_HISTORY + 5 {
        app.apply(Update::Event(event_from(&json!({
            "type": "sandbox.created", "sandbox_id": format!("sb-{i}"),
        }))));
    }
    assert_eq!(app.events.len(), EVENT_HISTORY);
    assert_eq!(app.events[0].sandbox, format!("sb-{}", EVENT_HISTORY + 4));
    // A selected event stays selected as newer ones arrive; one the filter hides moves nothing.
    app.tab = Tab::Events;
    app.selected[2] = 3;
    let picked = app.visible_events()[3].sandbox.clone();
    app.apply(Update::Event(event_from(
        &json!({"type": "exec.started", "sandbox_id": "sb-x"}),
    )));
    assert_eq!(app.visible_events()[app.selected[2]].sandbox, picked);
    app.filter = "sandbox.".into();
    let picked = app.visible_events()[app.selected[2]].sandbox.clone();
    app.apply(Update::Event(event_from(
        &json!({"type": "exec.started", "sandbox_id": "sb-y"}),
    )));
    assert_eq!(app.visible_events()[app.selected[2]].sandbox, picked);
}

#[test]
fn errors_show_until_the_next_success() {
    let mut app = App::default();
    app.apply(Update::Stream(Stream::Down("event stream: refused".into())));
    assert_eq!(app.error(), Some("event stream: refused"));
    app.apply(Update::Sandboxes(Err(
        "401 UNAUTHORIZED: invalid API key".into()
    )));
    assert_eq!(app.error(), Some("401 UNAUTHORIZED: invalid API key"));
    app.apply(Update::Sandboxes(Ok(vec![])));
    app.apply(Update::Stream(Stream::Live));
    assert_eq!(app.error(), None);
}

#[test]
fn decodes_the_api_lists() {
    let s = sandboxes_from(&json!([{
        "id": "sb-1", "state": "running", "provider": "mock", "worker_id": "w1",
        "image": "alpine", "created_at": "2026-01-01T00:00:00Z", "expires_at": "",
    }]));
    assert_eq!(s[0].worker, "w1");
    assert_eq!(
        s[0].created_at,
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single()
    );
    assert_eq!(s[0].expires_at, None);
    let w = workers_from(&json!([
        {"id": "local", "status": "online", "stale": false, "capacity": {}},
        {"id": "w1", "status": "online", "stale": true, "capacity": {"max_sandboxes": 4},
         "last_heartbeat": "2026-01-01T00:00:00Z"},
        {"id": "w2", "status": "draining", "capacity": {"max_sandboxes": 0}},
    ]));
    assert_eq!(
        w.iter()
            .map(|w| (w.health.as_str(), w.capacity.as_str()))
            .collect::<Vec<_>>(),
        [("online", ""), ("stale", "max 4"), ("draining", "no limit")]
    );
    let mut app = App::default();
    app.apply(Update::Sandboxes(Ok(s)));
    app.apply(Update::Workers(Ok(w)));
    assert_eq!(app.sandbox_count("w1"), 1);
    assert_eq!(app.sandbox_count("local"), 0);
    let e = event_from(&json!({"type": "exec.started", "sandbox_id": "sb-1", "data": {"a": 1}}));
    assert_eq!(
        (e.kind.as_str(), e.data.as_str()),
        ("exec.started", r#"{"a":1}"#)
    );
    assert!(changes_lists("sandbox.destroyed") && !changes_lists("exec.started"));
}

#[test]
fn server_sent_events_split_across_chunks() {
    let mut buf = b"data: {\"a\":1}\n\ndata: {\"b\":".to_vec();
    assert_eq!(take_sse(&mut buf), [r#"{"a":1}"#]);
    buf.extend_from_slice(b"2}\n\n: comment\n\n");
    assert_eq!(take_sse(&mut buf), [r#"{"b":2}"#]);
    assert!(buf.is_empty());
    // A multi-byte character split between two chunks decodes whole.
    let mut buf = "data: \"é".as_bytes()[..8].to_vec();
    assert!(take_sse(&mut buf).is_empty());
    buf.extend_from_slice(&"é\"\n\n".as_bytes()[1..]);
    assert_eq!(take_sse(&mut buf), ["\"é\""]);
}

#[test]
fn ages_and_expiry() {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    assert_eq!(ago(Some(now - Duration::seconds(42)), now), "42s ago");
    assert_eq!(ago(Some(now - Duration::minutes(5)), now), "5m ago");
    assert_eq!(ago(Some(now - Duration::hours(3)), now), "3h ago");
    assert_eq!(ago(Some(now - Duration::days(2)), now), "2d ago");
    assert_eq!(ago(None, now), "-");
    assert_eq!(until(Some(now + Duration::minutes(4)), now), "in 4m");
    assert_eq!(until(Some(now - Duration::seconds(1)), now), "expired");
    assert_eq!(until(None, now), "never");
}
