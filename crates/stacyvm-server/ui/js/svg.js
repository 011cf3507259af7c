// Hand-made SVG charts (no chart library): bars (stacked) and lines over one hour of
// per-minute slots. Colours come from CSS classes (k0…k7, ok, fail), so they follow the
// light or dark setting; every chart has a title, a description and a legend in HTML.

import { h, uid } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

/** s("rect", {x: 1}, child…) builds an SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** The smallest 1, 2 or 5 × 10^k at or above v (and at least `min`). */
export function niceMax(v, min = 1) {
  const x = Math.max(v, min);
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** "12", "1.5k", "0.25": short tick labels. */
export function fmtNum(v) {
  if (v >= 10000) return `${Math.round(v / 1000)}k`;
  if (v >= 1000) return `${(v / 1000).toFixed(1).replace(/\.0$/, "")}k`;
  if (v >= 10 || Number.isInteger(v)) return String(Math.round(v));
  if (v >= 1) return v.toFixed(1).replace(/\.0$/, "");
  return String(Number(v.toPrecision(2)));
}

function hhmm(d) {
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

const W = 640;
const H = 230;
const PAD = { l: 44, r: 10, t: 20, b: 24 };
const TICKS = 4;

/**
 * chart({id, title, desc, unit, kind: "bars" | "lines", slots: [Date], series: [{name,
 * cls, values: [number | null], dashed}], empty}) → <figure>. Bars stack in series order;
 * a null in a line is a gap. `unit` labels the y axis; `empty` is shown when nothing is
 * above zero.
 */
export function chart(o) {
  const n = o.slots.length;
  const pw = W - PAD.l - PAD.r;
  const ph = H - PAD.t - PAD.b;
  const slotW = pw / Math.max(n, 1);
  let top = 0;
  if (o.kind === "bars") {
    for (let i = 0; i < n; i += 1) {
      top = Math.max(top, o.series.reduce((a, sr) => a + (sr.values[i] || 0), 0));
    }
  } else {
    for (const sr of o.series) for (const v of sr.values) if (v !== null) top = Math.max(top, v);
  }
  // Four steps of 1, 2 or 5 × 10^k: whole numbers for counts, small steps for latency.
  const max = TICKS * niceMax(top / TICKS, o.kind === "bars" ? 1 : 0.001);
  const y = (v) => PAD.t + ph - (v / max) * ph;
  const x = (i) => PAD.l + i * slotW;

  const titleId = uid("ct");
  const descId = uid("cd");
  const grid = [];
  for (let k = 0; k <= TICKS; k += 1) {
    const v = (max * k) / TICKS;
    grid.push(s("line", { class: "grid", x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }),
      s("text", { class: "tick", x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end" }, fmtNum(v)));
  }
  for (let i = 0; i < n; i += 1) {
    if (o.slots[i].getMinutes() % 10 !== 0) continue;
    grid.push(s("line", { class: "grid", x1: x(i), x2: x(i), y1: PAD.t, y2: PAD.t + ph }),
      s("text", { class: "tick", x: x(i), y: H - 6, "text-anchor": "middle" }, hhmm(o.slots[i])));
  }

  const marks = [];
  if (o.kind === "bars") {
    const base = new Array(n).fill(0);
    for (const sr of o.series) {
      for (let i = 0; i < n; i += 1) {
        const v = sr.values[i] || 0;
        if (v <= 0) continue;
        marks.push(s("rect", {
          class: `bar ${sr.cls}`, x: x(i) + slotW * 0.15, width: Math.max(slotW * 0.7, 1),
          y: y(base[i] + v), height: Math.max(y(base[i]) - y(base[i] + v), 0.5),
          "data-series": sr.key || sr.name, "data-value": v, "data-minute": o.slots[i].toISOString(),
        }, s("title", {}, `${hhmm(o.slots[i])}: ${v} ${sr.name}`)));
        base[i] += v;
      }
    }
  } else {
    for (const sr of o.series) {
      let d = "";
      let pen = false;
      const dots = [];
      for (let i = 0; i < n; i += 1) {
        const v = sr.values[i];
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        const px = (x(i) + slotW / 2).toFixed(1);
        const py = y(v).toFixed(1);
        d += `${pen ? "L" : "M"}${px} ${py} `;
        pen = true;
        dots.push(s("circle", { class: `dot ${sr.cls}`, cx: px, cy: py, r: 2.2,
          "data-series": sr.key || sr.name, "data-value": v },
        s("title", {}, `${hhmm(o.slots[i])}: ${sr.name} ${fmtNum(v)}${o.unit ? ` ${o.unit}` : ""}`)));
      }
      if (d) marks.push(s("path", { class: `line ${sr.cls}${sr.dashed ? " dashed" : ""}`, d: d.trim() }));
      marks.push(...dots);
    }
  }
  const nothing = top <= 0;
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${titleId} ${descId}`,
    preserveAspectRatio: "xMidYMid meet", class: "chart",
  },
  s("title", { id: titleId }, o.title),
  s("desc", { id: descId }, o.desc),
  grid,
  s("text", { class: "tick unit", x: PAD.l, y: PAD.t - 8 }, o.unit || ""),
  s("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: PAD.t + ph, y2: PAD.t + ph }),
  marks,
  nothing ? s("text", { class: "nodata", x: PAD.l + pw / 2, y: PAD.t + ph / 2, "text-anchor": "middle" },
    o.empty || "No data in the last hour") : null);
  const legend = h("ul", { class: "legend", "aria-label": `${o.title}: legend` },
    o.series.map((sr) => h("li", {}, h("span", { class: `swatch ${sr.cls}${sr.dashed ? " dashed" : ""}`,
      "aria-hidden": "true" }), sr.name)));
  return h("figure", { class: "card chart-card", id: o.id, dataset: { max: String(max) } },
    h("figcaption", {}, h("h2", {}, o.title), h("p", { class: "hint" }, o.desc)),
    svg, o.series.length ? legend : null);
}
