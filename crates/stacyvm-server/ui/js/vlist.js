// A virtualised table: every row has one height, and only the rows in (and near) the
// scrolled view are in the DOM, between two spacer rows that keep the scrollbar honest. So
// 1,000 or 10,000 sandboxes cost the same few dozen rows. Rows are reused while their
// item's signature is unchanged, so a refresh keeps focus on a row's button.

import { h, replace } from "./dom.js";

const OVERSCAN = 8;

/**
 * virtualTable({label, columns: [name], row(item) → <tr>, key(item), sig(item), empty()})
 * → {el, setItems(items)}. The table sets aria-rowcount and each row aria-rowindex, so a
 * screen reader knows where in the whole list a row is.
 */
export function virtualTable(o) {
  let items = [];
  let rowH = 40; // corrected from the first drawn row
  let measured = false;
  let frame = 0;
  const cache = new Map(); // key → {sig, tr}
  const tbody = h("tbody");
  const topPad = h("td", { colspan: String(o.columns.length) });
  const bottomPad = h("td", { colspan: String(o.columns.length) });
  const top = h("tr", { class: "spacer", "aria-hidden": "true" }, topPad);
  const bottom = h("tr", { class: "spacer", "aria-hidden": "true" }, bottomPad);
  const table = h("table", { class: "list vt", "aria-label": o.label },
    h("thead", {}, h("tr", { "aria-rowindex": "1" }, o.columns.map((c) => h("th", { scope: "col" }, c)))),
    tbody);
  const el = h("div", { class: "vscroll" }, table);

  function rowFor(item, index) {
    const key = o.key(item);
    const sig = o.sig(item);
    let c = cache.get(key);
    if (!c || c.sig !== sig) {
      c = { sig, tr: o.row(item) };
      cache.set(key, c);
    }
    c.tr.setAttribute("aria-rowindex", String(index + 2));
    return c.tr;
  }

  function draw() {
    frame = 0;
    table.setAttribute("aria-rowcount", String(items.length + 1));
    if (!items.length) {
      replace(tbody, o.empty());
      return;
    }
    const head = table.tHead ? table.tHead.offsetHeight : 0;
    const view = el.clientHeight || 600;
    // Clamped: after the list shrank (a filter) the old offset may be past its end.
    const scrollTop = Math.min(Math.max(el.scrollTop - head, 0), Math.max(items.length * rowH - view, 0));
    const first = Math.max(Math.floor(scrollTop / rowH) - OVERSCAN, 0);
    const last = Math.min(Math.ceil((scrollTop + view) / rowH) + OVERSCAN, items.length);
    topPad.style.height = `${first * rowH}px`;
    bottomPad.style.height = `${(items.length - last) * rowH}px`;
    const rows = [];
    for (let i = first; i < last; i += 1) rows.push(rowFor(items[i], i));
    // Replacing only what changed keeps a focused button in place.
    const want = [top, ...rows, bottom];
    const have = [...tbody.children];
    if (want.length !== have.length || want.some((r, i) => r !== have[i])) tbody.replaceChildren(...want);
    top.hidden = first === 0;
    bottom.hidden = last === items.length;
    if (!measured && rows.length) {
      const got = rows[0].offsetHeight;
      if (got > 0) {
        measured = true;
        if (Math.abs(got - rowH) > 0.5) {
          rowH = got;
          schedule();
        }
      }
    }
    // Forget rows far from view once the cache is large.
    if (cache.size > 4 * (last - first) + 200) {
      const keep = new Set(items.slice(first, last).map(o.key));
      for (const k of cache.keys()) if (!keep.has(k)) cache.delete(k);
    }
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  el.addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", schedule);
  return {
    el,
    setItems(next) {
      items = next;
      draw();
    },
    /** Scrolls so the item with `key` is in view (if listed); true when found. */
    reveal(key) {
      const i = items.findIndex((it) => o.key(it) === key);
      if (i < 0) return false;
      el.scrollTop = i * rowH;
      draw();
      return true;
    },
    dispose() {
      window.removeEventListener("resize", schedule);
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
