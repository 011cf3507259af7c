// The Workers page: health, last heartbeat, capacity, providers, sandboxes per worker; drain
// and delete for admins (the admin key; anything else answers 403, shown as an error).

import { del, enc, get, post } from "./api.js";
import { badge, busy, confirmButton, h, notice, replace, showError, when } from "./dom.js";
import { keepFresh } from "./events.js";

// Workers send no events of their own (heartbeats are not events): poll.
const REFETCH_MS = 10000;

function health(w) {
  if (w.stale) return badge("stale");
  return badge(w.status || "unknown");
}

function capacity(w) {
  const max = w.capacity ? w.capacity.max_sandboxes : undefined;
  if (max === undefined || max === null) return "";
  return max > 0 ? `max ${max} sandboxes` : "no limit";
}

function actions(w, refresh) {
  const drain = h("button", {
    type: "button",
    "aria-label": `Drain ${w.id}`,
    disabled: w.status === "draining" || w.id === "local",
    title: w.id === "local" ? "The control plane's own worker cannot be drained" : "Stop placing sandboxes on it",
    onclick: (e) => busy(e.currentTarget, async () => {
      await post(`/admin/workers/${enc(w.id)}/drain`);
      notice(`${w.id} is draining`);
      await refresh();
    }),
  }, "Drain");
  const remove = confirmButton("Delete", "Really delete?", async () => {
    try {
      await del(`/admin/workers/${enc(w.id)}`);
      notice(`${w.id} deleted`);
      await refresh();
    } catch (e) {
      showError(e);
    }
  }, { class: "danger", "aria-label": `Delete ${w.id}` });
  return h("div", { class: "actions" }, drain, remove);
}

export function render(main) {
  let disposed = false;
  const tbody = h("tbody");
  const summary = h("p", { class: "count", "aria-live": "polite" });
  replace(main, h("h1", {}, "Workers"),
    h("p", { class: "hint" }, "Drain and delete need the admin key."),
    summary,
    h("div", { class: "scroll" }, h("table", { class: "list", "aria-label": "Workers" },
      h("thead", {}, h("tr", {}, ["ID", "Health", "Last heartbeat", "Host", "Providers", "Capacity", "Sandboxes", "Actions"]
        .map((c) => h("th", { scope: "col" }, c)))),
      tbody)));

  async function refresh() {
    try {
      const [workers, sandboxes] = await Promise.all([get("/workers"), get("/sandboxes")]);
      if (disposed) return;
      const per = {};
      for (const sb of sandboxes) per[sb.worker_id || ""] = (per[sb.worker_id || ""] || 0) + 1;
      const rows = workers.map((w) => h("tr", { dataset: { id: w.id } },
        h("td", { class: "mono" }, w.id),
        h("td", {}, health(w)),
        h("td", {}, when(w.last_heartbeat)),
        h("td", {}, w.hostname),
        h("td", {}, (w.providers || []).join(", ")),
        h("td", {}, capacity(w)),
        h("td", {}, String(per[w.id] || 0)),
        h("td", {}, actions(w, refresh))));
      replace(tbody, rows.length ? rows : h("tr", {}, h("td", { colspan: "8", class: "empty" }, "No workers.")));
      const stale = workers.filter((w) => w.stale).length;
      summary.textContent = `${workers.length} worker${workers.length === 1 ? "" : "s"}${stale ? `, ${stale} stale` : ""}`;
    } catch (e) {
      if (!disposed) showError(e);
    }
  }

  const stop = keepFresh(refresh, REFETCH_MS, (ev) =>
    ev.type === "reconcile.action" || ev.type === "sandbox.created" || ev.type === "sandbox.destroyed");
  return () => {
    disposed = true;
    stop();
  };
}
