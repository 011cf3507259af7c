// The browser terminal: xterm.js over the process attach WebSocket (docs/processes.md).
//
// - A PTY process `sh` is started with the terminal's size and stdin, tagged `console`.
// - Its pid is kept in sessionStorage per sandbox; a reload re-attaches to the same process
//   from seq 0, so what it printed (as far as the agent still retains it) is drawn again.
// - Keystrokes go out as binary frames, the window's size as `{"type":"resize"}` text frames;
//   output comes as binary frames, the end as `{"type":"exit","exit_code":N}`.

import { Terminal } from "../vendor/xterm.mjs";
import { FitAddon } from "../vendor/addon-fit.mjs";
import { attachSocket, enc, get, post } from "./api.js";
import { busy, h, replace, showError } from "./dom.js";

const storeKey = (sandboxId) => `stacyvm.term.${sandboxId}`;

/** Mounts a terminal for `sandboxId` in `slot`; returns a cleanup function. */
export function mountTerminal(slot, sandboxId) {
  const status = h("span", { class: "term-status", role: "status" }, "starting…");
  const screen = h("div", { class: "term-screen", id: "terminal" });
  const newBtn = h("button", { type: "button" }, "New terminal");
  const reconnectBtn = h("button", { type: "button", hidden: true }, "Reconnect");
  const endBtn = h("button", { type: "button" }, "End session");
  replace(slot, h("div", { class: "term-bar" }, status, reconnectBtn, newBtn, endBtn), screen);

  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
    fontSize: 14,
    theme: { background: "#10151c", foreground: "#d8dee9" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);

  let pid = null;
  let ws = null;
  let disposed = false;
  const encoder = new TextEncoder();

  function fitNow() {
    try {
      fit.fit();
    } catch {
      // Not laid out yet (hidden): the next resize fits it.
    }
  }

  function setStatus(text) {
    status.textContent = text;
  }

  function send(bytes) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
  }

  // The size is shown on the element too (the browser test compares it with `stty size`).
  function showSize() {
    screen.dataset.cols = String(term.cols);
    screen.dataset.rows = String(term.rows);
  }

  term.onData((s) => send(encoder.encode(s)));
  term.onBinary((s) => send(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => {
    showSize();
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "resize", cols, rows }));
    } else if (pid !== null) {
      post(`/sandboxes/${enc(sandboxId)}/processes/${pid}/resize`, { cols, rows }).catch(() => {});
    }
  });

  // The window (or the layout) changes size: the terminal follows, and so does the PTY.
  let fitTimer = null;
  fitNow();
  showSize();
  const observer = new ResizeObserver(() => {
    clearTimeout(fitTimer);
    fitTimer = setTimeout(fitNow, 100);
  });
  observer.observe(screen);

  async function startNew() {
    fitNow();
    const p = await post(`/sandboxes/${enc(sandboxId)}/processes`, {
      command: "sh",
      pty: { cols: term.cols, rows: term.rows },
      stdin: true,
      env: { TERM: "xterm-256color" },
      tag: "console",
    });
    sessionStorage.setItem(storeKey(sandboxId), String(p.pid));
    return p.pid;
  }

  /** The stored process if it still runs, else a new one. */
  async function ensureProcess() {
    const saved = sessionStorage.getItem(storeKey(sandboxId));
    if (saved) {
      try {
        const p = await get(`/sandboxes/${enc(sandboxId)}/processes/${Number(saved)}`);
        if (p.state === "running" && p.pty) return p.pid;
      } catch (e) {
        if (e.status !== 404) throw e;
      }
      sessionStorage.removeItem(storeKey(sandboxId));
    }
    return startNew();
  }

  function attach() {
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    term.reset();
    reconnectBtn.hidden = true;
    setStatus(`pid ${pid} · attaching…`);
    screen.dataset.pid = String(pid);
    const sock = attachSocket(sandboxId, pid, 0);
    sock.binaryType = "arraybuffer";
    ws = sock;
    let exited = false;
    sock.onopen = () => {
      setStatus(`pid ${pid} · attached`);
      screen.dataset.attached = "true";
      // The PTY may have the size of an earlier window: give it this one.
      fitNow();
      sock.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
      term.focus();
    };
    sock.onmessage = (m) => {
      if (typeof m.data === "string") {
        let msg = null;
        try {
          msg = JSON.parse(m.data);
        } catch {
          return;
        }
        if (msg && msg.type === "exit") {
          exited = true;
          term.write(`\r\n[process exited with code ${msg.exit_code}]\r\n`);
          sessionStorage.removeItem(storeKey(sandboxId));
          setStatus(`pid ${pid} · exited (${msg.exit_code})`);
        }
        return;
      }
      term.write(new Uint8Array(m.data));
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      screen.dataset.attached = "false";
      if (disposed || exited) return;
      setStatus(`pid ${pid} · disconnected${e.code && e.code !== 1000 ? ` (${e.code})` : ""}`);
      reconnectBtn.hidden = false;
    };
  }

  async function open(fresh) {
    try {
      if (fresh) sessionStorage.removeItem(storeKey(sandboxId));
      pid = await ensureProcess();
      if (disposed) return;
      attach();
    } catch (e) {
      setStatus(`no terminal: ${e.message}`);
      showError(e);
    }
  }

  reconnectBtn.addEventListener("click", () => {
    if (pid !== null) attach();
  });
  newBtn.addEventListener("click", (e) => busy(e.currentTarget, () => open(true)));
  endBtn.addEventListener("click", (e) => busy(e.currentTarget, async () => {
    if (pid === null) return;
    await post(`/sandboxes/${enc(sandboxId)}/processes/${pid}/signal`, { signal: "HUP" });
  }));

  open(false);

  return () => {
    disposed = true;
    observer.disconnect();
    clearTimeout(fitTimer);
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    term.dispose();
  };
}
