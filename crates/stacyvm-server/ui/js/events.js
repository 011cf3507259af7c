// One live event stream per tab, shared by every page: subscribers get each event; the last
// HISTORY events are kept for the Events page. Reconnects with backoff; pages also refetch
// on a timer, so a lost stream never leaves them stale for long.

import { readEvents } from "./api.js";
import { coalesce } from "./dom.js";

const HISTORY = 1000;

const subscribers = new Set();
const stateListeners = new Set();
const history = [];
let controller = null;
let state = "closed";

export function subscribe(fn) {
  subscribers.add(fn);
  return () => subscribers.delete(fn);
}

/**
 * Keeps a page fresh: runs `refresh` now, every `everyMs`, and (at most once a second) after
 * each event `wanted(ev)` accepts. The returned function stops all three.
 */
export function keepFresh(refresh, everyMs, wanted) {
  const soon = coalesce(refresh, 1000);
  const stop = subscribe((ev) => {
    if (wanted(ev)) soon();
  });
  const timer = setInterval(refresh, everyMs);
  refresh();
  return () => {
    clearInterval(timer);
    soon.cancel();
    stop();
  };
}

/** fn(state) on every change ("connecting", "open", "closed"), and once now. */
export function onStreamState(fn) {
  stateListeners.add(fn);
  fn(state);
  return () => stateListeners.delete(fn);
}

export function recent() {
  return history;
}

function setState(s) {
  state = s;
  for (const fn of stateListeners) fn(s);
}

function dispatch(ev) {
  history.push(ev);
  if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
  for (const fn of subscribers) {
    try {
      fn(ev);
    } catch (e) {
      console.error("event subscriber failed", e);
    }
  }
}

export function start() {
  if (controller) return;
  controller = new AbortController();
  const { signal } = controller;
  (async () => {
    let delay = 500;
    while (!signal.aborted) {
      setState("connecting");
      try {
        await readEvents(dispatch, (s) => {
          if (s === "open") delay = 500;
          setState(s);
        }, signal);
      } catch (e) {
        if (signal.aborted) break;
        if (e.status === 401) break;
      }
      if (signal.aborted) break;
      setState("closed");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
    setState("closed");
  })();
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
  history.length = 0;
}
