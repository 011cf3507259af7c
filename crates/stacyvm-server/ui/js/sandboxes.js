// The Sandboxes page: spawn form, filters, and the live table (event stream + a periodic
// refetch as the fallback). The list is fetched in pages of 500 and drawn virtualised
// (vlist.js): only the rows in view are in the DOM, so 1,000 sandboxes scroll like 10.

import { del, enc, get, getAll, post } from "./api.js";
import { badge, busy, coalesce, confirmButton, field, h, notice, relTime, replace, select, showError, when } from "./dom.js";
import { onStreamState, subscribe } from "./events.js";
import { virtualTable } from "./vlist.js";

const REFETCH_MS = 15000;
const PAGE = 500;
const COLUMNS = ["ID", "State", "Provider", "Worker", "Image", "Created", "Expires", "Actions"];

// Kept across visits of the page, like a filter in the URL would be.
const filters = { state: "", provider: "", worker: "", text: "" };

/** The actions every sandbox row and the sandbox page share. */
export function sandboxActions(sb, after) {
  const id = sb.id;
  const act = (label, fn) => h("button", {
    type: "button",
    "aria-label": `${label} ${id}`,
    onclick: (e) => busy(e.currentTarget, async () => {
      await fn();
      if (after) await after();
    }),
  }, label);
  const out = [];
  if (sb.state === "running" || sb.state === "paused") {
    out.push(act("Extend", async () => {
      const s = await post(`/sandboxes/${enc(id)}/extend`, { ttl: "30m" });
      notice(`${id} now expires ${new Date(s.expires_at).toLocaleString()}`);
    }));
  }
  if (sb.state === "running") out.push(act("Pause", () => post(`/sandboxes/${enc(id)}/pause`)));
  if (sb.state === "running") {
    out.push(act("Snapshot", async () => {
      const s = await post(`/sandboxes/${enc(id)}/snapshots`, {});
      notice(`${s.id} taken from ${id} (${s.kind})`);
    }));
    out.push(act("Fork", async () => {
      const list = await post(`/sandboxes/${enc(id)}/fork`, { count: 1 });
      notice(`${id} forked: ${list.map((s) => s.id).join(", ")}`);
    }));
  }
  if (sb.state === "paused") out.push(act("Resume", () => post(`/sandboxes/${enc(id)}/resume`, {})));
  out.push(confirmButton("Destroy", "Really destroy?", async () => {
    try {
      await del(`/sandboxes/${enc(id)}`);
      notice(`${id} destroyed`);
      if (after) await after();
    } catch (e) {
      showError(e);
    }
  }, { class: "danger", "aria-label": `Destroy ${id}` }));
  return h("div", { class: "actions" }, out);
}

function matches(sb) {
  if (filters.state && sb.state !== filters.state) return false;
  if (filters.provider && sb.provider !== filters.provider) return false;
  if (filters.worker && (sb.worker_id || "") !== filters.worker) return false;
  if (filters.text) {
    const hay = [sb.id, sb.image, sb.owner_id, sb.tenant_id, sb.worker_id,
      ...Object.entries(sb.metadata || {}).map(([k, v]) => `${k}=${v}`)].join(" ").toLowerCase();
    if (!hay.includes(filters.text.toLowerCase())) return false;
  }
  return true;
}

function spawnForm(providers, templates, onSpawned) {
  const image = h("input", { type: "text", name: "image", value: "alpine:latest", spellcheck: "false" });
  const template = select([["", "(none: use the image)"], ...templates.map((t) => [t.name, t.name])], "",
    { name: "template" });
  const provider = select([["", "(server default)"], ...providers.map((p) => [p.name, p.name])], "",
    { name: "provider" });
  const ttl = h("input", { type: "text", name: "ttl", placeholder: "e.g. 30m", size: "8" });
  const submit = h("button", { type: "submit" }, "Spawn");
  template.addEventListener("change", () => {
    image.disabled = template.value !== "";
  });
  const form = h("form", { class: "spawn card", "aria-label": "Spawn a sandbox" },
    h("h2", {}, "Spawn"),
    h("div", { class: "row" },
      field("Image", image), field("Template", template), field("Provider", provider), field("TTL", ttl),
      h("div", { class: "field end" }, submit)));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      const body = {};
      if (provider.value) body.provider = provider.value;
      if (ttl.value.trim()) body.ttl = ttl.value.trim();
      let sb;
      if (template.value) {
        sb = await post(`/templates/${enc(template.value)}/spawn`, body);
      } else {
        body.image = image.value.trim();
        sb = await post("/sandboxes", body);
      }
      notice(`spawned ${sb.id}`);
      onSpawned(sb);
    });
  });
  return form;
}

export function render(main) {
  const byId = new Map();
  const stops = [];
  let timer = null;
  let disposed = false;

  const count = h("p", { class: "count", "aria-live": "polite" });
  const filterBox = h("div", { class: "filters row", role: "search" });
  const formSlot = h("div");
  const list = virtualTable({
    label: "Sandboxes",
    columns: COLUMNS,
    key: (sb) => sb.id,
    // What a row shows; relative times change it every few seconds at most.
    sig: (sb) => [sb.state, sb.provider, sb.worker_id, sb.image, sb.expires_at, relTime(sb.created_at),
      sb.state === "paused" ? "" : relTime(sb.expires_at)].join("|"),
    row: (sb) => h("tr", { dataset: { id: sb.id, state: sb.state } },
      h("td", {}, h("a", { href: `#/sandboxes/${sb.id}`, class: "mono" }, sb.id)),
      h("td", {}, badge(sb.state)),
      h("td", {}, sb.provider),
      h("td", {}, sb.worker_id || ""),
      h("td", { class: "mono" }, sb.image),
      h("td", {}, when(sb.created_at)),
      h("td", {}, sb.state === "paused" ? "paused" : when(sb.expires_at)),
      h("td", {}, sandboxActions(sb, refresh))),
    empty: () => h("tr", {}, h("td", { colspan: String(COLUMNS.length), class: "empty" },
      byId.size ? "No sandbox matches the filters." : "No sandboxes.")),
  });
  stops.push(list.dispose);
  replace(main, h("h1", {}, "Sandboxes"), formSlot, filterBox, count, list.el);

  function options(key, current) {
    const seen = new Set([...byId.values()].map((s) => (key === "worker_id" ? s.worker_id || "" : s[key])));
    if (current) seen.add(current);
    return [["", "all"], ...[...seen].filter((v) => v !== "").sort().map((v) => [v, v])];
  }

  let filterSig = null;

  function drawFilters() {
    // Redrawn only when the choices change: a redraw would close an open <select>.
    const sig = JSON.stringify([options("state", filters.state), options("provider", filters.provider),
      options("worker_id", filters.worker)]);
    if (sig === filterSig) return;
    filterSig = sig;
    const focused = document.activeElement && filterBox.contains(document.activeElement)
      ? document.activeElement.name : null;
    const mk = (name, label, key) => {
      const s = select(options(key, filters[name]), filters[name], { name });
      s.addEventListener("change", () => {
        filters[name] = s.value;
        draw();
      });
      return field(label, s);
    };
    const text = h("input", { type: "search", name: "text", value: filters.text,
      placeholder: "id, image, owner, metadata" });
    text.addEventListener("input", () => {
      filters.text = text.value;
      drawRows();
    });
    replace(filterBox, mk("state", "State", "state"), mk("provider", "Provider", "provider"),
      mk("worker", "Worker", "worker_id"), field("Search", text));
    if (focused) {
      const el = filterBox.querySelector(`[name="${focused}"]`);
      if (el) el.focus();
    }
  }

  function drawRows() {
    const all = [...byId.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1
      : a.id < b.id ? 1 : -1));
    const shown = all.filter(matches);
    list.setItems(shown);
    const states = {};
    for (const sb of all) states[sb.state] = (states[sb.state] || 0) + 1;
    const summary = Object.entries(states).map(([k, v]) => `${v} ${k}`).join(", ");
    count.textContent = `${all.length} sandbox${all.length === 1 ? "" : "es"}${summary ? ` (${summary})` : ""}`
      + (shown.length !== all.length ? `; ${shown.length} match` : "");
    count.dataset.total = String(all.length);
  }

  function draw() {
    drawFilters();
    drawRows();
  }

  async function refresh() {
    try {
      const got = await getAll("/sandboxes", { limit: PAGE });
      if (disposed) return;
      byId.clear();
      for (const sb of got) byId.set(sb.id, sb);
      draw();
    } catch (e) {
      if (!disposed) showError(e);
    }
  }

  // Events name sandboxes; those of a burst are fetched together once it settles (a big
  // burst is one list call), so a spawn storm costs a few requests, not one per event.
  const pending = new Set();
  const flush = coalesce(async () => {
    const ids = [...pending];
    pending.clear();
    if (disposed || !ids.length) return;
    if (ids.length > 20) {
      await refresh();
      return;
    }
    await Promise.all(ids.map(async (id) => {
      try {
        const sb = await get(`/sandboxes/${enc(id)}`);
        if (sb.state === "destroyed") byId.delete(id);
        else byId.set(id, sb);
      } catch (e) {
        if (e.status === 404) byId.delete(id);
      }
    }));
    if (!disposed) draw();
  }, 250);

  stops.push(subscribe((ev) => {
    if (!ev.sandbox_id || !ev.type.startsWith("sandbox.")) return;
    if (ev.type === "sandbox.destroyed") {
      byId.delete(ev.sandbox_id);
      pending.delete(ev.sandbox_id);
      draw();
    } else {
      pending.add(ev.sandbox_id);
      flush();
    }
  }));
  stops.push(flush.cancel);
  let watching = false;
  stops.push(onStreamState((s) => {
    if (watching && s === "open") refresh();
  }));
  watching = true;
  timer = setInterval(refresh, REFETCH_MS);

  Promise.all([get("/providers").catch(() => []), get("/templates").catch(() => [])])
    .then(([providers, templates]) => {
      if (disposed) return;
      replace(formSlot, spawnForm(providers, templates, (sb) => {
        byId.set(sb.id, sb);
        draw();
      }));
    });
  draw();
  refresh();

  return () => {
    disposed = true;
    clearInterval(timer);
    for (const s of stops) s();
  };
}
