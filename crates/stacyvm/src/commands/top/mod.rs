//! `stacyvm top`: a live terminal view of sandboxes, workers and events (docs/console.md).
//!
//! `model.rs` holds what is shown and `input.rs` changes it on keys, both without a terminal;
//! `render.rs` draws it; `fetch.rs` keeps it live from the server (the event stream plus a
//! periodic refresh). This file owns the terminal: the UI loop runs on a blocking thread
//! (crossterm's input is read by polling), and leaves the terminal to the shell of `enter`
//! and takes it back afterwards.

mod fetch;
mod input;
mod model;
mod render;

use std::io::{IsTerminal, Stdout};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;
use tokio::sync::mpsc;

use self::fetch::Fetcher;
use self::model::{Action, App, Update};
use super::client::Client;
use super::procs;
use crate::cli::ClientArgs;

/// How long the UI waits for a key before drawing again (updates and ages show this often).
const TICK: Duration = Duration::from_millis(100);

pub async fn run(c: &ClientArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("stacyvm top needs a terminal (stdin and stdout)");
    }
    let (fetcher, updates) = Fetcher::start(Client::new(c));
    let args = c.clone();
    let rt = tokio::runtime::Handle::current();
    let (fetcher, result) = tokio::task::spawn_blocking(move || {
        let r = ui(&args, &fetcher, updates, &rt);
        (fetcher, r)
    })
    .await
    .context("the terminal UI failed")?;
    fetcher.shutdown().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The UI loop: apply what the fetchers sent, draw, wait for a key, act on it.
fn ui(
    c: &ClientArgs,
    fetcher: &Fetcher,
    mut updates: mpsc::UnboundedReceiver<Update>,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    install_panic_hook();
    let mut screen = Screen::enter().context("setting up the terminal")?;
    let mut app = App::default();
    loop {
        while let Ok(u) = updates.try_recv() {
            app.apply(u);
        }
        let height = screen.terminal.size().context("terminal size")?.height;
        app.page = usize::from(height.saturating_sub(render::CHROME_ROWS)).max(1);
        screen
            .terminal
            .draw(|f| render::draw(f, &app, &c.server, chrono::Utc::now()))
            .context("drawing")?;
        if !event::poll(TICK).context("reading the keyboard")? {
            continue;
        }
        let action = match event::read().context("reading the keyboard")? {
            Event::Key(k) => app.on_key(k),
            _ => Action::None,
        };
        match action {
            Action::None => {}
            Action::Quit => return Ok(()),
            Action::Refresh => fetcher.refresh(),
            Action::Destroy(id) => fetcher.destroy(id),
            Action::Shell(id) => {
                screen.suspend().context("leaving the terminal UI")?;
                println!("stacyvm top: shell in {id}; `exit` returns to top");
                let r = rt.block_on(procs::open_shell(c, &id));
                screen.resume().context("returning to the terminal UI")?;
                app.notice = Some(match r {
                    Ok(code) => Ok(format!("shell in {id} exited with status {code}")),
                    Err(e) => Err(format!("shell in {id}: {e:#}")),
                });
                fetcher.refresh();
            }
        }
    }
}

/// The terminal in raw mode on the alternate screen while alive; restored on drop (an error
/// return included), and by the panic hook on a panic.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        setup()?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        Ok(Screen { terminal })
    }

    /// Gives the terminal back (for the shell) as it was before `top`.
    fn suspend(&mut self) -> std::io::Result<()> {
        restore()
    }

    fn resume(&mut self) -> std::io::Result<()> {
        setup()?;
        self.terminal.clear()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Whether `setup` has taken the terminal and `restore` not yet given it back: restoring twice
/// (the panic hook, then `Screen`'s drop while unwinding) would leave the alternate screen
/// twice, and the second restores the cursor to above the panic message and overwrites it.
static TAKEN: AtomicBool = AtomicBool::new(false);

fn setup() -> std::io::Result<()> {
    TAKEN.store(true, Ordering::SeqCst);
    enable_raw_mode()?;
    execute!(std::io::stdout(), EnterAlternateScreen, Hide)
}

/// Gives the terminal back once per `setup`; both steps run even if the first fails.
fn restore() -> std::io::Result<()> {
    if !TAKEN.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let raw = disable_raw_mode();
    let screen = execute!(std::io::stdout(), LeaveAlternateScreen, Show);
    raw.and(screen)
}

/// A panic restores the terminal before the message is printed, so it is readable.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = restore();
        previous(info);
    }));
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod render_tests;
