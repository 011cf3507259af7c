// The API client: every call sends the operator's key as X-API-Key; errors become ApiError
// with the server's stable {code, message}. The key lives in sessionStorage (this tab only,
// gone when it closes), never in a cookie or a URL.

const KEY = "stacyvm.key";
const BASE = "/api/v1";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(code ? `${message} (${status} ${code})` : message);
    this.status = status;
    this.code = code;
  }
}

// Called when any request answers 401: the key is wrong or was revoked.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = getKey();
  if (key) h["X-API-Key"] = key;
  return h;
}

async function failure(resp) {
  let code = "";
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.code) {
      code = body.code;
      message = body.message || message;
    }
  } catch {
    // Not JSON (a proxy's page): the status line says enough.
  }
  return new ApiError(resp.status, code, message);
}

/**
 * api("GET", "/sandboxes") → parsed JSON. Options: json (a body to encode), body (raw),
 * contentType, raw (return the Response itself, for downloads), signal, check401 (default
 * true: a 401 logs out).
 */
export async function api(method, path, opts = {}) {
  const extra = {};
  let body = opts.body;
  if (opts.json !== undefined) {
    extra["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (opts.contentType) {
    extra["Content-Type"] = opts.contentType;
  }
  let resp;
  try {
    resp = await fetch(BASE + path, { method, headers: headers(extra), body, signal: opts.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "", `the server cannot be reached (${e.message})`);
  }
  if (!resp.ok) {
    const err = await failure(resp);
    if (resp.status === 401 && opts.check401 !== false) onUnauthorized(err);
    throw err;
  }
  if (opts.raw) return resp;
  const type = resp.headers.get("content-type") || "";
  if (type.startsWith("application/json")) return resp.json();
  return resp.text();
}

export const get = (path, opts) => api("GET", path, opts);
export const post = (path, json, opts = {}) => api("POST", path, { ...opts, json });
export const del = (path, opts) => api("DELETE", path, opts);

/**
 * Every item of a paged list (`GET /sandboxes?limit=N&cursor=C`): fetches page after page,
 * following `X-Next-Cursor` until the last. `onPage(itemsSoFar, total)` after each page.
 */
export async function getAll(path, { limit = 500, signal, onPage } = {}) {
  const out = [];
  let cursor = "";
  const sep = path.includes("?") ? "&" : "?";
  for (;;) {
    const resp = await api("GET", `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      { raw: true, signal });
    out.push(...(await resp.json()));
    if (onPage) onPage(out, Number(resp.headers.get("X-Total-Count") || out.length));
    cursor = resp.headers.get("X-Next-Cursor") || "";
    if (!cursor) return out;
  }
}

/** `encodeURIComponent` for a path segment or query value. */
export const enc = encodeURIComponent;

/**
 * Reads the server-sent event stream with fetch (EventSource cannot send X-API-Key):
 * calls onEvent(event) for each `data:` JSON, onState("open" | "closed", error?) on changes.
 * Resolves when the stream ends; rejects on an HTTP error.
 */
export async function readEvents(onEvent, onState, signal) {
  const resp = await fetch(`${BASE}/events`, { headers: headers(), signal });
  if (!resp.ok) {
    const err = await failure(resp);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  onState("open");
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      try {
        onEvent(JSON.parse(data));
      } catch {
        // A malformed event is skipped, not fatal to the stream.
      }
    }
  }
}

/**
 * The WebSocket URL and subprotocols of a process's attach socket. A browser cannot set
 * X-API-Key on a WebSocket, so the key travels as the subprotocol `stacyvm.key.<hex of its
 * UTF-8 bytes>` next to `stacyvm.attach`, which the server selects (docs/threat-model.md).
 */
export function attachSocket(sandboxId, pid, since = 0) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${BASE}/sandboxes/${enc(sandboxId)}/processes/${pid}/attach?since=${since}`;
  const protocols = ["stacyvm.attach"];
  const key = getKey();
  if (key) {
    const hex = Array.from(new TextEncoder().encode(key), (b) => b.toString(16).padStart(2, "0")).join("");
    protocols.push(`stacyvm.key.${hex}`);
  }
  return new WebSocket(url, protocols);
}
