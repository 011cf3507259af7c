// Boot: the login form, the hash router, the header. Pages are modules exporting
// render(main, params) → cleanup function.

import { ApiError, clearKey, get, getKey, setKey, setUnauthorizedHandler } from "./api.js";
import { clearBanner, field, h, replace, showError } from "./dom.js";
import * as events from "./events.js";
import * as sandboxes from "./sandboxes.js";
import * as sandbox from "./sandbox.js";
import * as workers from "./workers.js";
import * as eventlog from "./eventlog.js";
import * as charts from "./charts.js";
import * as audit from "./audit.js";
import { images, quotas, snapshots, templates, volumes } from "./catalog.js";

// [hash pattern, page, nav section, title]
const routes = [
  [/^#\/sandboxes\/(sb-[0-9a-f]+)$/, sandbox, "sandboxes", "Sandbox"],
  [/^#\/sandboxes$/, sandboxes, "sandboxes", "Sandboxes"],
  [/^#\/workers$/, workers, "workers", "Workers"],
  [/^#\/events$/, eventlog, "events", "Events"],
  [/^#\/charts$/, charts, "charts", "Charts"],
  [/^#\/templates$/, templates, "templates", "Templates"],
  [/^#\/quotas$/, quotas, "quotas", "Quotas"],
  [/^#\/snapshots$/, snapshots, "snapshots", "Snapshots"],
  [/^#\/volumes$/, volumes, "volumes", "Volumes"],
  [/^#\/images$/, images, "images", "Images"],
  [/^#\/audit$/, audit, "audit", "Admin audit"],
];

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const session = document.getElementById("session");
let cleanup = null;

function loggedIn() {
  return getKey() !== null;
}

function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  if (!loggedIn()) {
    renderLogin();
    return;
  }
  const hash = location.hash || "#/sandboxes";
  for (const [re, page, section, title] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    markNav(section);
    document.title = `${title} · StacyVM console`;
    cleanup = page.render(main, m.slice(1)) || null;
    return;
  }
  location.replace("#/sandboxes");
}

function markNav(section) {
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function renderLogin(error) {
  nav.hidden = true;
  session.hidden = true;
  events.stop();
  document.title = "Log in · StacyVM console";
  const key = h("input", { type: "password", name: "key", autocomplete: "current-password", required: false });
  const err = h("p", { id: "login-error", class: "error", role: "alert" }, error || "");
  err.hidden = !error;
  const submit = h("button", { type: "submit" }, "Log in");
  const form = h("form", { class: "login card", "aria-describedby": "login-error" },
    h("h1", {}, "Log in"),
    h("p", {}, "Use an API key of this server (the admin key for the admin actions). It is kept in this tab only."),
    field("API key", key, "Leave empty if the server has no keys."),
    err,
    submit);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    err.hidden = true;
    try {
      await login(key.value.trim());
    } catch (ex) {
      err.textContent = ex instanceof ApiError && ex.status === 401
        ? "Wrong API key: the server refused it (401 UNAUTHORIZED)."
        : `Login failed: ${ex.message}`;
      err.hidden = false;
      key.focus();
      key.select();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, form);
  key.focus();
}

/** Checks the key on an authenticated route, then shows the console. A refused key is
 * forgotten; on another failure a saved key (a reload) is kept for the next try. */
async function login(key, saved = false) {
  setKey(key);
  try {
    await get("/providers", { check401: false });
  } catch (e) {
    if (!saved || e.status === 401) clearKey();
    throw e;
  }
  clearBanner();
  start();
}

function start() {
  nav.hidden = false;
  session.hidden = false;
  events.start();
  if (!location.hash || location.hash === "#/login") location.replace("#/sandboxes");
  route();
}

function logout() {
  clearKey();
  events.stop();
  location.hash = "#/login";
  route();
}

function streamIndicator() {
  const dot = document.getElementById("stream");
  events.onStreamState((s) => {
    dot.dataset.state = s;
    dot.textContent = s === "open" ? "live" : s === "connecting" ? "connecting…" : "offline";
    dot.title = s === "open" ? "Event stream connected" : "Event stream not connected; pages refetch on a timer";
  });
}

setUnauthorizedHandler(() => {
  clearKey();
  events.stop();
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  renderLogin("The server refused the key (401 UNAUTHORIZED): log in again.");
});

window.addEventListener("hashchange", route);
// The skip link moves focus without touching the hash (the router owns it).
document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason && e.reason.name === "AbortError") return;
  showError(e.reason);
});
document.getElementById("logout").addEventListener("click", logout);
streamIndicator();

if (loggedIn()) {
  // A reload keeps the tab's key: check it again before showing anything.
  login(getKey(), true).catch((e) => {
    renderLogin(e instanceof ApiError && e.status === 401
      ? "The server refused the saved key (401 UNAUTHORIZED): log in again."
      : `Cannot reach the server: ${e.message}`);
  });
} else {
  renderLogin();
}
