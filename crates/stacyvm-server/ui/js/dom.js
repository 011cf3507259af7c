// Small DOM helpers: element building, formatting, the status banner.
// No innerHTML anywhere: every text from the server goes through text nodes.

/** h("button", {class: "x", onclick: fn}, "text", child, [more]) builds an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.className = v;
    } else if (k === "for") {
      el.htmlFor = v;
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "value") {
      el.value = v;
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A labelled form control: <label for=id>text</label> + the control. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  return h("div", { class: "field" },
    h("label", { for: control.id }, label), control,
    hint ? h("small", { class: "hint" }, hint) : null);
}

let counter = 0;
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A <select> of [value, text] pairs (or plain strings). */
export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const o of options) {
    const [v, t] = Array.isArray(o) ? o : [o, o];
    const opt = h("option", { value: v }, t);
    if (v === value) opt.selected = true;
    el.append(opt);
  }
  return el;
}

/** A button that asks for a second press before it acts (no blocking dialog). */
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  let armed = null;
  const btn = h("button", { type: "button", ...attrs }, label);
  btn.addEventListener("click", async () => {
    if (!armed) {
      btn.textContent = confirmLabel;
      btn.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        btn.textContent = label;
        btn.classList.remove("armed");
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    btn.textContent = label;
    btn.classList.remove("armed");
    await action();
  });
  return btn;
}

/** Runs `fn` with the button disabled; errors go to the banner. */
export async function busy(btn, fn) {
  btn.disabled = true;
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    btn.disabled = false;
  }
}

/** A function that runs `fn` at most once per `ms`, after the first call of a burst. */
export function coalesce(fn, ms = 300) {
  let timer = null;
  const run = () => {
    timer = null;
    fn();
  };
  const schedule = () => {
    if (timer === null) timer = setTimeout(run, ms);
  };
  schedule.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return schedule;
}

// ---- the banner: errors and notices, announced to screen readers -----------------------
let bannerTimer = null;

export function showError(e) {
  const msg = e && e.message ? e.message : String(e);
  banner(msg, "error");
}

export function notice(msg) {
  banner(msg, "notice");
}

function banner(msg, kind) {
  const el = document.getElementById("banner");
  if (!el) return;
  el.className = `banner ${kind}`;
  replace(el, h("span", {}, msg),
    h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: clearBanner }, "×"));
  el.hidden = false;
  clearTimeout(bannerTimer);
  if (kind === "notice") bannerTimer = setTimeout(clearBanner, 5000);
}

export function clearBanner() {
  const el = document.getElementById("banner");
  if (el) {
    el.hidden = true;
    el.replaceChildren();
  }
}

// ---- formatting ----------------------------------------------------------------------------
export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString();
}

/** "in 29m", "3s ago". */
export function relTime(iso, now = Date.now()) {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return "";
  const diff = Math.round((t - now) / 1000);
  const abs = Math.abs(diff);
  if (abs < 5) return "just now";
  let s;
  if (abs < 60) s = `${abs}s`;
  else if (abs < 3600) s = `${Math.floor(abs / 60)}m`;
  else if (abs < 86400) s = `${Math.floor(abs / 3600)}h${Math.floor((abs % 3600) / 60)}m`;
  else s = `${Math.floor(abs / 86400)}d`;
  return diff >= 0 ? `in ${s}` : `${s} ago`;
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A state badge: <span class="badge state-running">running</span>. */
export function badge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

/** <time datetime=iso title=local>relative</time>. */
export function when(iso) {
  if (!iso) return "";
  return h("time", { datetime: iso, title: fmtTime(iso) }, relTime(iso));
}
