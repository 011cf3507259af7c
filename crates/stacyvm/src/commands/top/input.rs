//! Keys → model changes and [`Action`]s. No terminal here: a key is a crossterm value, so the
//! whole table is unit-tested.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Action, App, Mode, Tab};

impl App {
    pub(super) fn on_key(&mut self, k: KeyEvent) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::None;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match self.mode.clone() {
            Mode::Filter => {
                self.filter_key(k);
                Action::None
            }
            Mode::ConfirmDestroy(id) => {
                self.mode = Mode::Normal;
                if matches!(k.code, KeyCode::Char('y' | 'Y')) {
                    self.notice = Some(Ok(format!("destroying {id}…")));
                    Action::Destroy(id)
                } else {
                    self.notice = Some(Ok("destroy cancelled".into()));
                    Action::None
                }
            }
            Mode::Normal => self.normal_key(k),
        }
    }

    fn normal_key(&mut self, k: KeyEvent) -> Action {
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
            }
            KeyCode::Char('1') => self.tab = Tab::Sandboxes,
            KeyCode::Char('2') => self.tab = Tab::Workers,
            KeyCode::Char('3') => self.tab = Tab::Events,
            KeyCode::Tab => self.tab = self.tab.next(),
            KeyCode::BackTab => self.tab = self.tab.next().next(),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-page(self.page)),
            KeyCode::PageDown => self.move_by(page(self.page)),
            KeyCode::Home | KeyCode::Char('g') => self.home(),
            KeyCode::End | KeyCode::Char('G') => self.end(),
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char('r') => return Action::Refresh,
            KeyCode::Char('d') if self.tab == Tab::Sandboxes => {
                if let Some(id) = self.selected_sandbox().map(|s| s.id.clone()) {
                    self.mode = Mode::ConfirmDestroy(id);
                }
            }
            KeyCode::Enter if self.tab == Tab::Sandboxes => {
                if let Some(id) = self.selected_sandbox().map(|s| s.id.clone()) {
                    return Action::Shell(id);
                }
            }
            _ => {}
        }
        Action::None
    }

    /// Typing the filter: it applies as it is typed; Enter keeps it, Esc clears it.
    fn filter_key(&mut self, k: KeyEvent) {
        match k.code {
            KeyCode::Enter => self.mode = Mode::Normal,
            KeyCode::Esc => {
                self.filter.clear();
                self.mode = Mode::Normal;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.clamp();
    }
}

fn page(rows: usize) -> isize {
    isize::try_from(rows.max(1)).unwrap_or(isize::MAX)
}
