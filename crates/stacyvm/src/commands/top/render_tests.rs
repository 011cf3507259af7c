//! Drawing on ratatui's `TestBackend`: what the views show, without a terminal.

use chrono::{TimeZone, Utc};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;

use super::model::{self, App, Stream, Tab, Update};
use super::render;

fn screen(app: &App) -> String {
    let mut t = match Terminal::new(TestBackend::new(120, 12)) {
        Ok(t) => t,
        Err(e) => panic!("test backend: {e}"),
    };
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    if let Err(e) = t.draw(|f| render::draw(f, app, "http://127.0.0.1:7423", now)) {
        panic!("draw: {e}");
    }
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn app() -> App {
    let mut app = App::default();
    app.apply(Update::Sandboxes(Ok(model::sandboxes_from(&json!([{
        "id": "sb-7f3a9c", "state": "running", "provider": "mock", "worker_id": "",
        "image": "alpine:latest", "created_at": "2026-01-01T11:55:00Z",
        "expires_at": "2026-01-01T12:10:00Z",
    }])))));
    app.apply(Update::Workers(Ok(model::workers_from(&json!([{
        "id": "local", "status": "online", "stale": false, "capacity": {"max_sandboxes": 8},
        "last_heartbeat": "2026-01-01T11:59:58Z",
    }])))));
    app.apply(Update::Stream(Stream::Live));
    app
}

#[test]
fn the_sandbox_view_shows_each_sandbox() {
    let s = screen(&app());
    assert!(s.contains("sb-7f3a9c"), "{s}");
    assert!(s.contains("running"), "{s}");
    assert!(s.contains("alpine:latest"), "{s}");
    assert!(s.contains("5m ago"), "{s}");
    assert!(s.contains("in 10m"), "{s}");
    assert!(s.contains("● live"), "{s}");
    assert!(s.contains("1 Sandboxes (1)"), "{s}");
}

#[test]
fn the_worker_view_counts_sandboxes() {
    let mut app = app();
    app.tab = Tab::Workers;
    let s = screen(&app);
    assert!(s.contains("local"), "{s}");
    assert!(s.contains("online"), "{s}");
    assert!(s.contains("2s ago"), "{s}");
    assert!(s.contains("max 8"), "{s}");
    assert!(!s.contains("sb-7f3a9c"), "{s}");
}

#[test]
fn the_event_view_and_the_error_line() {
    let mut app = app();
    app.apply(Update::Event(model::event_from(&json!({
        "type": "sandbox.created", "sandbox_id": "sb-7f3a9c", "data": {"image": "alpine"},
    }))));
    app.apply(Update::Sandboxes(Err(
        "401 UNAUTHORIZED: invalid API key".into()
    )));
    app.tab = Tab::Events;
    let s = screen(&app);
    assert!(s.contains("sandbox.created"), "{s}");
    assert!(s.contains(r#"{"image":"alpine"}"#), "{s}");
    assert!(
        s.contains("error: 401 UNAUTHORIZED: invalid API key"),
        "{s}"
    );
}

#[test]
fn prompts_replace_the_key_line() {
    let mut app = app();
    app.mode = model::Mode::ConfirmDestroy("sb-7f3a9c".into());
    assert!(screen(&app).contains("destroy sb-7f3a9c? y/N"));
    app.mode = model::Mode::Filter;
    app.filter = "zzz".into();
    let s = screen(&app);
    assert!(s.contains("/zzz"), "{s}");
    assert!(s.contains("No sandboxes."), "{s}");
}
