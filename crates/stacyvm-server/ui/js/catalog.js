// Pages over the API's other lists: templates, quotas, snapshots (spawn from one, delete),
// volumes (create, delete); and the images page, which says that no API route lists them
// instead of inventing one.

import { del, enc, get, post } from "./api.js";
import { busy, confirmButton, h, notice, replace, showError, when } from "./dom.js";
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

const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`);

/** A delete button that asks twice, then refreshes the page. */
function deleteButton(label, path, done) {
  return confirmButton("Delete", "Really delete?", async () => {
    try {
      await del(path);
      notice(`${label} deleted`);
      done();
    } catch (e) {
      showError(e);
    }
  }, { class: "danger", "aria-label": `Delete ${label}` });
}

export const snapshots = {
  render(main) {
    let page = null;
    const again = () => page && page.refresh && page.refresh();
    page = listPage(main, {
      title: "Snapshots",
      intro: "GET /api/v1/snapshots: taken with a sandbox's Snapshot button (or POST "
        + "/api/v1/sandboxes/{id}/snapshots). `filesystem` snapshots bring back files; spawning from "
        + "one starts a new sandbox with them.",
      noun: ["snapshot", "snapshots"],
      empty: "No snapshots. Take one from a running sandbox's page.",
      key: (s) => s.id,
      events: ["snapshot.", "sandbox."],
      load: () => get("/snapshots"),
      columns: [
        { name: "ID", cell: (s) => mono(s.id) },
        { name: "Name", cell: (s) => s.name || "" },
        { name: "Kind", cell: (s) => s.kind },
        { name: "From", cell: (s) => h("a", { href: `#/sandboxes/${enc(s.sandbox_id)}`, class: "mono" }, s.sandbox_id) },
        { name: "Provider", cell: (s) => s.provider },
        { name: "Image", cell: (s) => mono(s.image) },
        { name: "Size", cell: (s) => bytes(s.size_bytes || 0) },
        { name: "Created", cell: (s) => when(s.created_at), text: (s) => s.created_at },
        {
          name: "Actions",
          cell: (s) => h("div", { class: "actions" },
            h("button", {
              type: "button",
              "aria-label": `Spawn from ${s.id}`,
              onclick: (e) => busy(e.currentTarget, async () => {
                const sb = await post("/sandboxes", { snapshot: s.id });
                notice(`${sb.id} spawned from ${s.id}`);
                location.hash = `#/sandboxes/${enc(sb.id)}`;
              }),
            }, "Spawn"),
            deleteButton(s.id, `/snapshots/${enc(s.id)}`, again)),
          text: () => "",
        },
      ],
    });
    return page.cleanup;
  },
};

export const volumes = {
  render(main) {
    let page = null;
    const again = () => page && page.refresh && page.refresh();
    const name = h("input", { type: "text", name: "volume-name", spellcheck: "false", required: "" });
    const size = h("input", { type: "number", name: "volume-size", min: "1", placeholder: "default" });
    const form = h("form", { class: "row", "aria-label": "Create a volume" },
      h("label", {}, "Name ", name), h("label", {}, "Size (MiB) ", size),
      h("button", { type: "submit" }, "Create volume"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      busy(form.querySelector("button"), async () => {
        const body = { name: name.value.trim() };
        if (size.value) body.size_mb = Number(size.value);
        const v = await post("/volumes", body);
        notice(`volume ${v.name} created`);
        name.value = "";
        again();
      });
    });
    page = listPage(main, {
      title: "Volumes",
      intro: "GET /api/v1/volumes: storage that outlives sandboxes; mount one at spawn with "
        + "\"volumes\": [{\"name\", \"mount_path\", \"read_only\"?}]. A volume in use cannot be deleted.",
      noun: ["volume", "volumes"],
      empty: "No volumes.",
      controls: form,
      key: (v) => v.name,
      events: ["volume.", "sandbox."],
      load: () => get("/volumes"),
      columns: [
        { name: "Name", cell: (v) => mono(v.name) },
        { name: "Size", cell: (v) => (v.size_mb ? `${v.size_mb} MiB` : "unbounded") },
        { name: "Provider", cell: (v) => v.provider },
        { name: "Worker", cell: (v) => v.worker_id || "" },
        { name: "In use by", cell: (v) => (v.in_use_by || []).map((id) => h("a", { href: `#/sandboxes/${enc(id)}`, class: "mono" }, id, " ")) , text: (v) => (v.in_use_by || []).join(" ") },
        { name: "Created", cell: (v) => when(v.created_at), text: (v) => v.created_at },
        { name: "Actions", cell: (v) => deleteButton(v.name, `/volumes/${enc(v.name)}`, again), text: () => "" },
      ],
    });
    return page.cleanup;
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

export const images = noRoute("Images", "images",
  "The image store of the bwrap and microvm providers (docs/images.md) is managed on the host with "
  + "`stacyvm image` (pull, import, ls, rm, gc); the HTTP API has no image routes.");
