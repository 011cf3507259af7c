//! Drawing the model: a tab bar with the stream's state, the current tab's table, a status
//! line and a key/prompt line. Reads the model only, so any backend (the terminal, or
//! ratatui's `TestBackend` in tests) draws the same.

use chrono::{DateTime, Utc};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Tabs};
use ratatui::Frame;

use super::model::{ago, until, App, Mode, Stream, Tab};

/// Rows the chrome takes (tab bar, table header, status line, key line): the page size is the
/// terminal's height less these.
pub(super) const CHROME_ROWS: u16 = 4;

pub(super) fn draw(f: &mut Frame, app: &App, server: &str, now: DateTime<Utc>) {
    let [bar, body, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    tab_bar(f, bar, app, server);
    match app.tab {
        Tab::Sandboxes => sandboxes(f, body, app, now),
        Tab::Workers => workers(f, body, app, now),
        Tab::Events => events(f, body, app),
    }
    status_line(f, status, app);
    key_line(f, keys, app);
}

fn tab_bar(f: &mut Frame, area: Rect, app: &App, server: &str) {
    let counts = [
        app.visible_len(Tab::Sandboxes),
        app.visible_len(Tab::Workers),
        app.visible_len(Tab::Events),
    ];
    let titles = Tab::ALL.iter().map(|t| {
        Line::from(format!(
            "{} {} ({})",
            t.index() + 1,
            t.title(),
            counts[t.index()]
        ))
    });
    let (live, colour) = match &app.stream {
        Stream::Live => ("● live".to_string(), Color::Green),
        Stream::Connecting => ("○ connecting".to_string(), Color::Yellow),
        Stream::Down(_) => ("○ offline".to_string(), Color::Red),
    };
    let right = format!("{live}  {server} ");
    let width = u16::try_from(right.chars().count()).unwrap_or(u16::MAX);
    let [left, rest] =
        Layout::horizontal([Constraint::Min(1), Constraint::Length(width)]).areas(area);
    let tabs = Tabs::new(titles)
        .select(app.tab.index())
        .highlight_style(
            Style::default()
                .add_modifier(Modifier::BOLD | Modifier::REVERSED)
                .fg(Color::Cyan),
        )
        .divider("│");
    f.render_widget(tabs, left);
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(right, Style::default().fg(colour)))),
        rest,
    );
}

fn table<'a>(
    f: &mut Frame,
    area: Rect,
    app: &App,
    header: &'a [&'a str],
    widths: &[Constraint],
    rows: Vec<Row<'a>>,
    empty: &'a str,
) {
    let header = Row::new(header.iter().copied().map(Cell::from))
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    if rows.is_empty() {
        let [h, msg] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
        f.render_widget(
            Table::new(Vec::<Row>::new(), widths.iter().copied()).header(header),
            h,
        );
        f.render_widget(
            Paragraph::new(empty).style(Style::default().fg(Color::DarkGray)),
            msg,
        );
        return;
    }
    let t = Table::new(rows, widths.iter().copied())
        .header(header)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(app.selected[app.tab.index()]));
    f.render_stateful_widget(t, area, &mut state);
}

fn state_style(state: &str) -> Style {
    let c = match state {
        "running" => Color::Green,
        "paused" => Color::Blue,
        "error" | "failed" => Color::Red,
        "destroyed" | "destroying" | "stopped" => Color::DarkGray,
        _ => Color::Yellow,
    };
    Style::default().fg(c)
}

fn sandboxes(f: &mut Frame, area: Rect, app: &App, now: DateTime<Utc>) {
    let rows = app
        .visible_sandboxes()
        .into_iter()
        .map(|s| {
            Row::new(vec![
                Cell::from(s.id.clone()),
                Cell::from(s.state.clone()).style(state_style(&s.state)),
                Cell::from(s.provider.clone()),
                Cell::from(if s.worker.is_empty() {
                    "local".to_string()
                } else {
                    s.worker.clone()
                }),
                Cell::from(s.image.clone()),
                Cell::from(ago(s.created_at, now)),
                Cell::from(until(s.expires_at, now)),
            ])
        })
        .collect();
    let empty = if app.loaded {
        "No sandboxes."
    } else {
        "Loading…"
    };
    table(
        f,
        area,
        app,
        &[
            "ID", "STATE", "PROVIDER", "WORKER", "IMAGE", "AGE", "EXPIRES",
        ],
        &[
            Constraint::Length(20),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(14),
            Constraint::Min(16),
            Constraint::Length(9),
            Constraint::Length(10),
        ],
        rows,
        empty,
    );
}

fn workers(f: &mut Frame, area: Rect, app: &App, now: DateTime<Utc>) {
    let rows = app
        .visible_workers()
        .into_iter()
        .map(|w| {
            let health = match w.health.as_str() {
                "online" => Color::Green,
                "stale" | "offline" => Color::Red,
                _ => Color::Yellow,
            };
            Row::new(vec![
                Cell::from(w.id.clone()),
                Cell::from(w.health.clone()).style(Style::default().fg(health)),
                Cell::from(ago(w.last_heartbeat, now)),
                Cell::from(w.capacity.clone()),
                Cell::from(app.sandbox_count(&w.id).to_string()),
            ])
        })
        .collect();
    table(
        f,
        area,
        app,
        &["ID", "HEALTH", "LAST HEARTBEAT", "CAPACITY", "SANDBOXES"],
        &[
            Constraint::Min(16),
            Constraint::Length(10),
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Length(10),
        ],
        rows,
        "No workers.",
    );
}

fn events(f: &mut Frame, area: Rect, app: &App) {
    let rows = app
        .visible_events()
        .into_iter()
        .map(|e| {
            let at =
                e.at.map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            Row::new(vec![
                Cell::from(at),
                Cell::from(e.kind.clone()),
                Cell::from(e.sandbox.clone()),
                Cell::from(e.data.clone()),
            ])
        })
        .collect();
    table(
        f,
        area,
        app,
        &["TIME", "TYPE", "SANDBOX", "DATA"],
        &[
            Constraint::Length(8),
            Constraint::Length(20),
            Constraint::Length(20),
            Constraint::Min(10),
        ],
        rows,
        "No events yet (events since `top` started are shown, newest first).",
    );
}

fn status_line(f: &mut Frame, area: Rect, app: &App) {
    let line = if let Some(e) = app.error() {
        Line::from(Span::styled(
            format!("error: {e}"),
            Style::default().fg(Color::Red),
        ))
    } else {
        match &app.notice {
            Some(Ok(n)) => Line::from(n.as_str()),
            Some(Err(e)) => Line::from(Span::styled(
                format!("error: {e}"),
                Style::default().fg(Color::Red),
            )),
            None => Line::from(""),
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

fn key_line(f: &mut Frame, area: Rect, app: &App) {
    let prompt = Style::default().add_modifier(Modifier::BOLD);
    let line = match &app.mode {
        Mode::Filter => Line::from(vec![
            Span::styled("/", prompt),
            Span::raw(app.filter.as_str()),
            Span::styled("▏", prompt),
            Span::styled(
                "   enter keep · esc clear",
                Style::default().fg(Color::DarkGray),
            ),
        ]),
        Mode::ConfirmDestroy(id) => Line::from(Span::styled(
            format!("destroy {id}? y/N"),
            prompt.fg(Color::Yellow),
        )),
        Mode::Normal => {
            let mut keys = String::from(
                "q quit · 1/2/3 tab · ↑↓ jk PgUp PgDn Home End · / filter · r refresh",
            );
            if app.tab == Tab::Sandboxes {
                keys.push_str(" · enter shell · d destroy");
            }
            if !app.filter.is_empty() {
                keys = format!("filter: {} (esc clears) · {keys}", app.filter);
            }
            Line::from(Span::styled(keys, Style::default().fg(Color::DarkGray)))
        }
    };
    f.render_widget(Paragraph::new(line), area);
}
