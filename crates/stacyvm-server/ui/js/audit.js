// The Admin audit page: GET /admin/audit, newest first. The server filters by actor, method,
// path and status (exact matches) and returns at most `limit` rows; the search box then
// matches any column of those. The route needs the admin key: with the API key it answers
// 403, and the page says so in place of the list.

import { enc, get } from "./api.js";
import { field, h, select, when } from "./dom.js";
import { listPage } from "./lists.js";

// Kept across visits, like the sandboxes page's filters.
const query = { actor: "", method: "", path: "", status: "", limit: "100" };

export function render(main) {
  const input = (name, attrs = {}) => {
    const el = h("input", { type: "text", name, value: query[name], spellcheck: "false", ...attrs });
    return el;
  };
  const actor = input("actor", { placeholder: "admin:X-API-Key" });
  const path = input("path", { placeholder: "/api/v1/admin/audit", size: "24" });
  const status = input("status", { inputmode: "numeric", size: "5", placeholder: "403" });
  const method = select([["", "any"], "GET", "POST", "PUT", "DELETE"], query.method, { name: "method" });
  const limit = select(["50", "100", "200", "500"], query.limit, { name: "limit" });
  const apply = h("button", { type: "submit" }, "Apply");
  const form = h("form", { class: "card row", "aria-label": "Server-side audit filters" },
    field("Actor", actor), field("Method", method), field("Path", path), field("Status", status),
    field("Rows", limit), h("div", { class: "field end" }, apply));

  const page = listPage(main, {
    title: "Admin audit",
    intro: "Every admin request, refused ones included (GET /api/v1/admin/audit). The filters are exact "
      + "matches applied by the server; the search then looks through the rows it returned. "
      + "Export: the same URL with format=csv.",
    label: "Admin audit log",
    noun: ["record", "records"],
    empty: "No admin requests recorded (with these filters).",
    controls: form,
    adminHint: "The admin audit log needs the admin key (auth.admin_api_key): log out and log in with it.",
    key: (r) => String(r.id),
    load: () => {
      const qs = Object.entries(query).filter(([, v]) => v !== "").map(([k, v]) => `${k}=${enc(v)}`).join("&");
      return get(`/admin/audit${qs ? `?${qs}` : ""}`);
    },
    columns: [
      { name: "Time", cell: (r) => when(r.created_at), text: (r) => r.created_at },
      { name: "Actor", cell: (r) => r.actor },
      { name: "Method", cell: (r) => r.method },
      { name: "Path", cell: (r) => h("span", { class: "mono" }, r.path) },
      { name: "Status", cell: (r) => h("span", { class: r.status >= 400 ? "status-bad" : "" }, String(r.status)) },
      { name: "Duration", cell: (r) => `${r.duration_ms} ms` },
      { name: "Client", cell: (r) => r.remote_addr },
      { name: "Request ID", cell: (r) => h("span", { class: "mono" }, r.request_id) },
      { name: "User agent", cell: (r) => r.user_agent, cls: "data" },
    ],
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    query.actor = actor.value.trim();
    query.method = method.value;
    query.path = path.value.trim();
    query.status = status.value.trim();
    query.limit = limit.value;
    page.refresh();
  });
  return page.cleanup;
}
