// One sandbox: details and actions, its processes, its terminal, its files, its exec history,
// its console log.

import { enc, get } from "./api.js";
import { badge, busy, coalesce, fmtTime, h, replace, showError, when } from "./dom.js";
import { onStreamState, subscribe } from "./events.js";
import { mountFiles } from "./files.js";
import { sandboxActions } from "./sandboxes.js";
import { mountTerminal } from "./terminal.js";

const REFETCH_MS = 10000;

function details(sb) {
  const rows = [
    ["State", badge(sb.state)],
    ["Provider", sb.provider],
    ["Worker", sb.worker_id || ""],
    ["Image", sb.image],
    ["Owner", sb.owner_id || ""],
    ["Resources", `${sb.vcpus} vCPU, ${sb.memory_mb} MiB`],
    ["Created", h("span", {}, fmtTime(sb.created_at), " (", when(sb.created_at), ")")],
    ["Expires", sb.state === "paused" ? `paused ${fmtTime(sb.paused_at)}` : h("span", {}, fmtTime(sb.expires_at), " (", when(sb.expires_at), ")")],
    ["On expiry", sb.on_expire || "destroy"],
    ["Idle timeout", sb.idle_timeout || "none"],
    ["Metadata", Object.entries(sb.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
  ];
  return h("dl", { class: "details" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function processTable(list) {
  if (!list.length) return h("p", { class: "empty" }, "No processes.");
  return h("div", { class: "scroll" }, h("table", { class: "list", "aria-label": "Processes" },
    h("thead", {}, h("tr", {}, ["PID", "State", "Exit", "PTY", "Tag", "Started", "Command"]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, list.map((p) => h("tr", { dataset: { pid: String(p.pid) } },
      h("td", { class: "mono" }, String(p.pid)),
      h("td", {}, badge(p.state)),
      h("td", {}, p.state === "exited" ? (p.signal ? `SIG${p.signal}` : String(p.exit_code)) : ""),
      h("td", {}, p.pty ? "yes" : ""),
      h("td", {}, p.tag),
      h("td", {}, when(p.started_at)),
      h("td", { class: "mono" }, [p.command, ...(p.args || [])].join(" ")))))));
}

function execTable(list) {
  if (!list.length) return h("p", { class: "empty" }, "Nothing has run yet.");
  return h("div", { class: "scroll" }, h("table", { class: "list", "aria-label": "Exec history" },
    h("thead", {}, h("tr", {}, ["When", "Exit", "Duration", "Command", "Output"]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, list.map((x) => h("tr", {},
      h("td", {}, when(x.created_at)),
      // -1: a process start, whose end is in the process list.
      h("td", {}, x.exit_code === -1 ? "process" : String(x.exit_code)),
      h("td", {}, x.exit_code === -1 ? "" : x.duration),
      h("td", { class: "mono" }, x.command),
      h("td", { class: "mono" }, `${x.stdout}${x.stderr}`.slice(0, 200)))))));
}

/** A titled part of the page: <section aria-labelledby><h2>…</h2>…</section>. */
function section(title, ...body) {
  const id = `sec-${title.toLowerCase().replace(/\W+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...body);
}

export function render(main, [id]) {
  let disposed = false;
  let termCleanup = null;
  const stops = [];
  const head = h("div");
  const procSlot = h("div");
  const termSlot = h("div", { class: "term" });
  const fileSlot = h("div");
  const execSlot = h("div");
  const logSlot = h("pre", { class: "log", tabindex: "0", "aria-label": "Console log" });
  const openBtn = h("button", { type: "button", id: "open-terminal" }, "Open terminal");
  const logBtn = h("button", { type: "button" }, "Refresh log");

  replace(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/sandboxes" }, "Sandboxes"), " / ", h("span", { class: "mono" }, id)),
    h("h1", { class: "mono" }, id),
    head,
    section("Terminal", termSlot),
    section("Processes", procSlot),
    section("Files", fileSlot),
    section("Exec history", execSlot),
    section("Console log", h("div", { class: "row" }, logBtn), logSlot));

  function openTerminal() {
    if (termCleanup) return;
    termCleanup = mountTerminal(termSlot, id);
  }

  let current = null;
  async function refresh() {
    try {
      const sb = await get(`/sandboxes/${enc(id)}`);
      if (disposed) return;
      current = sb;
      replace(head, h("div", { class: "card" }, details(sb), sandboxActions(sb, refresh)));
    } catch (e) {
      if (disposed) return;
      if (e.status === 404) {
        current = null;
        replace(head, h("p", { class: "error", role: "alert" }, `Sandbox ${id} does not exist (destroyed).`));
      } else {
        showError(e);
      }
    }
  }

  async function refreshProcs() {
    if (!current || current.state !== "running") {
      replace(procSlot, h("p", { class: "empty" },
        current ? `The sandbox is ${current.state}: no process calls.` : "No processes."));
      return;
    }
    await fill(procSlot, `/sandboxes/${enc(id)}/processes`, processTable);
  }

  async function refreshExecs() {
    await fill(execSlot, `/sandboxes/${enc(id)}/execs?limit=50`, execTable);
  }

  /** `slot` shows `render(answer)` of GET `path`, or the error's message. */
  async function fill(slot, path, render) {
    try {
      const list = await get(path);
      if (!disposed) replace(slot, render(list));
    } catch (e) {
      if (!disposed) replace(slot, h("p", { class: "error" }, e.message));
    }
  }

  async function refreshLog() {
    try {
      const lines = await get(`/sandboxes/${enc(id)}/logs?lines=200`);
      if (!disposed) logSlot.textContent = Array.isArray(lines) && lines.length ? lines.join("\n") : "(empty)";
    } catch (e) {
      if (!disposed) logSlot.textContent = e.message;
    }
  }

  openBtn.addEventListener("click", openTerminal);
  logBtn.addEventListener("click", (e) => busy(e.currentTarget, refreshLog));

  const all = coalesce(() => refresh().then(refreshProcs));
  const procs = coalesce(refreshProcs);
  const execs = coalesce(refreshExecs);
  stops.push(all.cancel, procs.cancel, execs.cancel);
  stops.push(subscribe((ev) => {
    if (ev.sandbox_id !== id) return;
    if (ev.type.startsWith("sandbox.")) all();
    else if (ev.type.startsWith("process.")) procs();
    if (ev.type.startsWith("exec.") || ev.type === "process.started") execs();
  }));
  let watching = false;
  stops.push(onStreamState((s) => {
    if (watching && s === "open") refresh().then(refreshProcs);
  }));
  watching = true;
  const timer = setInterval(() => refresh().then(refreshProcs), REFETCH_MS);

  refresh().then(() => {
    if (disposed) return;
    refreshProcs();
    refreshExecs();
    refreshLog();
    if (current && current.state === "running") {
      mountFiles(fileSlot, id);
      // A terminal this tab opened before (a reload) comes back by itself.
      if (sessionStorage.getItem(`stacyvm.term.${id}`)) openTerminal();
      else replace(termSlot, h("p", {}, "A shell (sh) on a terminal in the sandbox. "), openBtn);
    } else {
      replace(termSlot, h("p", { class: "empty" }, "The terminal needs a running sandbox."));
      replace(fileSlot, h("p", { class: "empty" }, "Files need a running sandbox."));
    }
  });

  return () => {
    disposed = true;
    clearInterval(timer);
    for (const s of stops) s();
    if (termCleanup) termCleanup();
  };
}
