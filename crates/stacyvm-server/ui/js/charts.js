// The Charts page: the server's own last hour (GET /metrics/history, kept in memory by the
// server): spawns and spawn failures per minute, spawn latency p50/p99 by provider, running
// sandboxes by worker. Refetched every 15 s and shortly after sandbox and provider.failed
// events.

import { get } from "./api.js";
import { h, replace, showError } from "./dom.js";
import { keepFresh } from "./events.js";
import { chart, fmtNum } from "./svg.js";

const REFETCH_MS = 15000;
const PALETTE = 8;

/** Stable colour classes: the n-th name seen gets k(n mod 8). */
function colours(names) {
  const out = {};
  [...names].sort().forEach((n, i) => {
    out[n] = `k${i % PALETTE}`;
  });
  return out;
}

function spawnsChart(hist, slots) {
  return chart({
    id: "chart-spawns",
    kind: "bars",
    title: "Spawns per minute",
    desc: "Sandboxes this server spawned each minute, with the spawns a provider failed stacked on top.",
    unit: "spawns",
    slots,
    empty: "No spawns in the last hour",
    series: [
      { name: "spawned", key: "spawns", cls: "ok", values: hist.minutes.map((m) => m.spawns) },
      { name: "failed", key: "failures", cls: "fail", values: hist.minutes.map((m) => m.spawn_failures) },
    ],
  });
}

function latencyChart(hist, slots) {
  const providers = new Set(Object.keys(hist.latency_ms));
  for (const m of hist.minutes) for (const p of Object.keys(m.latency_ms)) providers.add(p);
  const cls = colours(providers);
  const series = [];
  for (const p of [...providers].sort()) {
    for (const q of ["p50", "p99"]) {
      series.push({
        name: `${p} ${q}`,
        key: `${p}:${q}`,
        cls: cls[p],
        dashed: q === "p99",
        values: hist.minutes.map((m) => (m.latency_ms[p] ? m.latency_ms[p][q] : null)),
      });
    }
  }
  return chart({
    id: "chart-latency",
    kind: "lines",
    title: "Spawn latency by provider",
    desc: "Median (solid) and 99th percentile (dashed) of each minute's successful spawns, in milliseconds.",
    unit: "ms",
    slots,
    empty: "No spawns in the last hour",
    series,
  });
}

function activeChart(hist, slots) {
  const workers = new Set();
  for (const m of hist.minutes) for (const w of Object.keys(m.active_by_worker || {})) workers.add(w);
  const cls = colours(workers);
  const series = [...workers].sort().map((w) => ({
    name: w,
    key: w,
    cls: cls[w],
    // A sampled minute without the worker counts 0; an unsampled one is a gap.
    values: hist.minutes.map((m) => (m.active_by_worker ? m.active_by_worker[w] || 0 : null)),
  }));
  return chart({
    id: "chart-active",
    kind: "lines",
    title: "Running sandboxes by worker",
    desc: "Sampled once a minute, just after it starts; gaps are minutes this server was not running.",
    unit: "sandboxes",
    slots,
    empty: "No running sandboxes sampled in the last hour",
    series,
  });
}

/** The hour's totals and latency as a table: the charts' figures in text. */
function summary(hist) {
  const spawns = hist.minutes.reduce((a, m) => a + m.spawns, 0);
  const failed = hist.minutes.reduce((a, m) => a + m.spawn_failures, 0);
  const rows = Object.entries(hist.latency_ms).sort().map(([p, l]) => h("tr", { dataset: { provider: p } },
    h("td", {}, p), h("td", {}, String(l.count)), h("td", {}, fmtNum(l.p50)), h("td", {}, fmtNum(l.p99))));
  return h("section", { class: "card", "aria-label": "Last hour in figures" },
    h("p", { id: "charts-total", class: "count", "aria-live": "polite", dataset: { spawns: String(spawns), failed: String(failed) } },
      `Last hour: ${spawns} spawn${spawns === 1 ? "" : "s"}, ${failed} failed.`),
    rows.length ? h("table", { class: "list", "aria-label": "Spawn latency over the last hour" },
      h("thead", {}, h("tr", {}, ["Provider", "Spawns", "p50 (ms)", "p99 (ms)"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)) : null);
}

export function render(main) {
  let disposed = false;
  const body = h("div", { class: "charts" }, h("p", { class: "hint" }, "Loading…"));
  const updated = h("p", { class: "hint", "aria-live": "off" });
  replace(main, h("h1", {}, "Charts"),
    h("p", { class: "hint" }, "This server's own figures over the last hour, kept in its memory (a restart starts empty). ",
      "With several control planes, each counts the spawns it made."),
    updated, body);

  async function refresh() {
    try {
      const hist = await get("/metrics/history");
      if (disposed) return;
      const slots = hist.minutes.map((m) => new Date(m.start));
      replace(body, summary(hist), spawnsChart(hist, slots), latencyChart(hist, slots), activeChart(hist, slots));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      if (!disposed) showError(e);
    }
  }

  const stop = keepFresh(refresh, REFETCH_MS, (ev) =>
    ev.type && (ev.type.startsWith("sandbox.") || ev.type === "provider.failed"));
  return () => {
    disposed = true;
    stop();
  };
}
