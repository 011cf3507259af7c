// Read-only pages over the API's other lists: templates, quotas, snapshots; and the volumes
// and images pages, which say that no API route lists them yet instead of inventing one.

import { get } from "./api.js";
import { h, replace, when } from "./dom.js";
import { listPage } from "./lists.js";

const mono = (s) => h("span", { class: "mono" }, s);

export const templates = {
  render(main) {
    return listPage(main, {
      title: "Templates",
      intro: "Spawn presets (GET /api/v1/templates). Spawn from one on the Sandboxes page.",
      noun: ["template", "templates"],
      empty: "No templates. Create one with PUT /api/v1/templates/{name}.",
      key: (t) => t.name,
      load: () => get("/templates"),
      columns: [
        { name: "Name", cell: (t) => mono(t.name) },
        { name: "Image", cell: (t) => mono(t.image) },
        { name: "Memory", cell: (t) => (t.memory_mb ? `${t.memory_mb} MiB` : "default") },
        { name: "vCPUs", cell: (t) => (t.cpu_cores ? String(t.cpu_cores) : "default") },
        { name: "TTL", cell: (t) => (t.ttl_seconds ? `${t.ttl_seconds} s` : "default") },
        { name: "Env", cell: (t) => Object.keys(t.env || {}).sort().join(", ") },
        { name: "Secrets", cell: (t) => (t.secrets || []).map((x) => `${x.name} → ${x.inject_at}`).join(", ") },
        { name: "Version", cell: (t) => String(t.version) },
        { name: "Updated", cell: (t) => when(t.updated_at), text: (t) => t.updated_at },
        { name: "Description", cell: (t) => t.description || "", cls: "data" },
      ],
    }).cleanup;
  },
};

export const quotas = {
  render(main) {
    const sum = h("p", { class: "hint", id: "quota-summary" });
    const page = listPage(main, {
      title: "Quotas",
      intro: "Per-owner limits (GET /api/v1/quotas); \"in use\" counts the owner's live sandboxes. "
        + "Setting or removing a quota needs the admin key (PUT or DELETE /api/v1/quotas/{owner}).",
      noun: ["quota", "quotas"],
      empty: "No quotas: every owner gets the server's defaults.",
      controls: sum,
      key: (q) => q.owner_id,
      events: ["quota."],
      load: async () => {
        const [list, summary, sandboxes] = await Promise.all([get("/quotas"), get("/quotas/summary"),
          get("/sandboxes").catch(() => [])]);
        const inUse = {};
        for (const sb of sandboxes) inUse[sb.owner_id || ""] = (inUse[sb.owner_id || ""] || 0) + 1;
        for (const q of list) q.in_use = inUse[q.owner_id] || 0;
        sum.textContent = `${summary.total} owner${summary.total === 1 ? "" : "s"} with a quota: `
          + `max sandboxes set for ${summary.with_max_sandboxes}, max TTL for ${summary.with_max_ttl}, `
          + `max exec timeout for ${summary.with_max_exec_timeout}.`;
        return list;
      },
      columns: [
        { name: "Owner", cell: (q) => mono(q.owner_id) },
        { name: "Max sandboxes", cell: (q) => (q.max_sandboxes ? String(q.max_sandboxes) : "not set") },
        { name: "In use", cell: (q) => String(q.in_use) },
        { name: "Max TTL", cell: (q) => (q.max_ttl === "0s" ? "not set" : q.max_ttl) },
        { name: "Max exec timeout", cell: (q) => (q.max_exec_timeout === "0s" ? "not set" : q.max_exec_timeout) },
        { name: "Updated", cell: (q) => when(q.updated_at), text: (q) => q.updated_at },
      ],
    });
    return page.cleanup;
  },
};

export const snapshots = {
  render(main) {
    return listPage(main, {
      title: "Snapshots",
      intro: "GET /api/v1/snapshots. This server does not take snapshots yet: the route answers an "
        + "empty list, kept for compatibility. There is no snapshot or fork button for the same reason.",
      noun: ["snapshot", "snapshots"],
      empty: "No snapshots (the server does not take any yet).",
      key: (s) => s.id || s.name || JSON.stringify(s),
      load: () => get("/snapshots"),
      columns: [
        { name: "ID", cell: (s) => mono(s.id || s.name || "") },
        { name: "Details", cell: (s) => JSON.stringify(s), cls: "data" },
      ],
    }).cleanup;
  },
};

/** Text with `backticked` parts as <code>. */
function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? h("code", {}, part) : part));
}

function noRoute(title, what, detail) {
  return {
    render(main) {
      replace(main, h("h1", {}, title),
        h("div", { class: "card", role: "note", dataset: { noRoute: "true" } },
          h("p", {}, h("strong", {}, `No API route lists ${what} yet.`), " ", withCode(detail)),
          h("p", { class: "hint" }, "The console only shows what the public API offers "
            + "(docs/console.md, \"Not built yet\").")));
      return null;
    },
  };
}

export const volumes = noRoute("Volumes", "volumes",
  "The server has no volumes: there is no `/api/v1/volumes` (the E2B API's `/volumes` answers 404 too).");

export const images = noRoute("Images", "images",
  "The image store of the bwrap and microvm providers (docs/images.md) is managed on the host with "
  + "`stacyvm image` (pull, import, ls, rm, gc); the HTTP API has no image routes.");
