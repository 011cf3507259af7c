// A read-only list page: a title, a note, a search box over the rows' text, a count and a
// table. Pages give their columns and how to fetch the rows; an error (a 403 for a route
// that needs the admin key, say) is shown in the page itself, not only in the banner.

import { ApiError } from "./api.js";
import { field, h, replace } from "./dom.js";
import { subscribe } from "./events.js";

/** An error shown where the list would be: what the server answered, and what to do. */
export function errorBox(e, adminHint) {
  const status = e instanceof ApiError ? e.status : 0;
  const lines = [h("strong", {}, status ? `The server answered ${status}${e.code ? ` ${e.code}` : ""}.` : "The request failed."),
    " ", e.message];
  if (status === 403 && adminHint) {
    lines.push(h("br"), adminHint);
  }
  return h("div", { class: "card failure", role: "alert", dataset: { status: String(status) } }, lines);
}

/**
 * listPage(main, {title, intro, label, columns: [{name, cell(row), text(row)}], load(),
 * key(row), empty, adminHint, events: [type prefix], controls}) → cleanup. `load` resolves
 * to the rows; `text` (default: the cell's text) is what the search matches.
 */
export function listPage(main, o) {
  let disposed = false;
  let rows = [];
  const tbody = h("tbody");
  const count = h("p", { class: "count", "aria-live": "polite" });
  const search = h("input", { type: "search", name: "q", placeholder: o.placeholder || "search every column" });
  const refreshBtn = h("button", { type: "button" }, "Refresh");
  const slot = h("div");
  const table = h("table", { class: "list", "aria-label": o.label || o.title },
    h("thead", {}, h("tr", {}, o.columns.map((c) => h("th", { scope: "col" }, c.name)))), tbody);
  replace(main, h("h1", {}, o.title),
    o.intro ? h("p", { class: "hint intro" }, o.intro) : null,
    o.controls || null,
    h("div", { class: "filters row", role: "search" }, field("Search", search),
      h("div", { class: "field end" }, refreshBtn)),
    count, slot);

  const text = (c, r) => (c.text ? c.text(r) : String(cellText(c.cell(r))));

  function draw() {
    const q = search.value.trim().toLowerCase();
    const shown = q ? rows.filter((r) => o.columns.some((c) => text(c, r).toLowerCase().includes(q))) : rows;
    replace(tbody, shown.length ? shown.map((r) => h("tr", { dataset: { id: o.key(r) } },
      o.columns.map((c) => h("td", { class: c.cls || null }, c.cell(r)))))
      : h("tr", {}, h("td", { colspan: String(o.columns.length), class: "empty" },
        rows.length ? "Nothing matches the search." : o.empty)));
    count.textContent = `${rows.length} ${rows.length === 1 ? o.noun[0] : o.noun[1]}`
      + (shown.length !== rows.length ? `; ${shown.length} match` : "");
  }

  async function refresh() {
    try {
      const got = await o.load();
      if (disposed) return;
      rows = got;
      replace(slot, h("div", { class: "scroll" }, table));
      draw();
    } catch (e) {
      if (disposed) return;
      rows = [];
      count.textContent = "";
      replace(slot, errorBox(e, o.adminHint));
    }
  }

  search.addEventListener("input", draw);
  refreshBtn.addEventListener("click", refresh);
  const stop = subscribe((ev) => {
    if (o.events && o.events.some((p) => ev.type && ev.type.startsWith(p))) refresh();
  });
  refresh();
  return { refresh, cleanup: () => {
    disposed = true;
    stop();
  } };
}

function cellText(c) {
  if (c === null || c === undefined) return "";
  if (c instanceof Node) return c.textContent;
  if (Array.isArray(c)) return c.map(cellText).join(" ");
  return String(c);
}
