// The Events page: the live event stream since this tab logged in (the server replays
// nothing), newest first, searchable by type, sandbox and data.

import { coalesce, field, fmtTime, h, replace, select } from "./dom.js";
import { onStreamState, recent, subscribe } from "./events.js";

const MAX_ROWS = 500;
const query = { text: "", kind: "" };

function matches(ev) {
  if (query.kind && !ev.type.startsWith(query.kind)) return false;
  if (query.text) {
    const hay = `${ev.type} ${ev.sandbox_id || ""} ${JSON.stringify(ev.data || {})}`.toLowerCase();
    if (!hay.includes(query.text.toLowerCase())) return false;
  }
  return true;
}

export function render(main) {
  const kinds = [["", "all"], ["sandbox.", "sandbox.*"], ["process.", "process.*"], ["exec.", "exec.*"],
    ["file.", "file.*"], ["spawn.", "spawn.*"], ["reconcile.", "reconcile.*"], ["quota.", "quota.*"],
    ["operation.failed", "operation.failed"], ["provider.failed", "provider.failed"],
    ["resource.limit", "resource.limit"]];
  const kind = select(kinds, query.kind, { name: "kind" });
  const text = h("input", { type: "search", name: "q", value: query.text, placeholder: "type, sandbox id, data" });
  const state = h("p", { class: "count", "aria-live": "polite" });
  const tbody = h("tbody");
  replace(main, h("h1", {}, "Events"),
    h("div", { class: "filters row", role: "search" }, field("Type", kind), field("Search", text)),
    state,
    h("div", { class: "scroll" }, h("table", { class: "list", "aria-label": "Events" },
      h("thead", {}, h("tr", {}, ["Time", "Type", "Sandbox", "Data"].map((c) => h("th", { scope: "col" }, c)))),
      tbody)));

  let streamState = "closed";
  function draw() {
    const all = recent();
    const shown = [];
    for (let i = all.length - 1; i >= 0 && shown.length < MAX_ROWS; i -= 1) {
      if (matches(all[i])) shown.push(all[i]);
    }
    replace(tbody, shown.length ? shown.map((ev) => h("tr", {},
      h("td", {}, h("time", { datetime: ev.timestamp }, fmtTime(ev.timestamp))),
      h("td", { class: "mono" }, ev.type),
      h("td", {}, ev.sandbox_id ? h("a", { href: `#/sandboxes/${ev.sandbox_id}`, class: "mono" }, ev.sandbox_id) : ""),
      h("td", { class: "mono data" }, ev.data ? JSON.stringify(ev.data) : "")))
      : h("tr", {}, h("td", { colspan: "4", class: "empty" },
        all.length ? "No event matches." : "No events since this tab logged in.")));
    state.textContent = `${all.length} event${all.length === 1 ? "" : "s"} received`
      + `${shown.length !== all.length ? `, ${shown.length} shown` : ""}; stream ${streamState}`;
  }

  const soon = coalesce(draw, 200);
  kind.addEventListener("change", () => {
    query.kind = kind.value;
    draw();
  });
  text.addEventListener("input", () => {
    query.text = text.value;
    draw();
  });
  const stops = [subscribe(soon), onStreamState((s) => {
    streamState = s;
    soon();
  })];
  draw();
  return () => {
    soon.cancel();
    for (const s of stops) s();
  };
}
