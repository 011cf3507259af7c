"""The operator console (/ui/, docs/console.md) in a real browser: Debian's Chromium,
headless, driven over the DevTools protocol (tests/e2e/cdp.py).

Scenario (issue 14): log in (a wrong key shows an error), see a sandbox spawned through the
API appear, open its page and its terminal, type `echo hi` and see `hi`, follow a window
resize, reload and find the same terminal (same pid, earlier output), visit the workers and
events pages, destroy the sandbox through the API and see it go. Then the charts (a spawn
through the API shows in the spawns chart), the read-only pages (templates, quotas,
snapshots, volumes, images, admin audit: a 403 with the API key, rows with the admin key),
and 1,000 live sandboxes in the virtualised list. Every page is written as a screenshot into
$STACYVM_WORK_DIR/e2e/console/ (default .test-work/e2e/console/), with asset-budget.txt: the
bytes the first load transferred.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest
from cdp import Chromium, Page, find_chromium
from conftest import ADMIN_KEY, API_KEY, WORK_ROOT, Server, require_backend

pytestmark = pytest.mark.backend("chromium")

SHOTS = WORK_ROOT / "console"
BUDGET = 500 * 1024

# Every form control has a label (or an aria-label), every button a name, and nothing but
# buttons and links is made clickable or focusable by hand (xterm's own tree aside).
A11Y_PROBLEMS = """(() => {
  const bad = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!named) bad.push('unlabelled: ' + el.outerHTML.slice(0, 100));
  }
  for (const el of document.querySelectorAll('button')) {
    if (!(el.textContent.trim() || el.getAttribute('aria-label')))
      bad.push('nameless button: ' + el.outerHTML.slice(0, 100));
  }
  for (const el of document.querySelectorAll('[onclick], div[tabindex], span[tabindex], [role=button]')) {
    if (!el.closest('.xterm')) bad.push('clickable non-button: ' + el.outerHTML.slice(0, 100));
  }
  // Every button and link can be reached with Tab: in the tab order, not inside something
  // hidden from assistive technology or inert.
  for (const el of document.querySelectorAll('button, a[href], input, select')) {
    if (el.closest('.xterm')) continue;
    if (el.tabIndex < 0) bad.push('out of the tab order: ' + el.outerHTML.slice(0, 100));
    if (el.closest('[aria-hidden=true], [inert]')) bad.push('unreachable: ' + el.outerHTML.slice(0, 100));
  }
  // Every chart is an image with a name (its <title>) and a description.
  for (const svg of document.querySelectorAll('svg.chart')) {
    const ids = (svg.getAttribute('aria-labelledby') || '').split(' ').filter(Boolean);
    const texts = ids.map(id => (document.getElementById(id) || {}).textContent || '');
    if (svg.getAttribute('role') !== 'img' || ids.length < 2 || texts.some(t => !t.trim()))
      bad.push('unnamed chart: ' + svg.outerHTML.slice(0, 100));
  }
  if (!document.querySelector('h1')) bad.push('no h1');
  return bad;
})()"""

NAV = ["Sandboxes", "Workers", "Events", "Charts", "Templates", "Quotas", "Snapshots", "Volumes",
       "Images", "Audit"]

TERMINAL_TEXT = ("(document.querySelector('#terminal .xterm-rows') || {innerText: ''})"
                 ".innerText.replace(/\\u00a0/g, ' ')")


def terminal_lines(page: Page) -> list[str]:
    return [line.rstrip() for line in page.eval(TERMINAL_TEXT).split("\n")]


def wait_terminal_line(page: Page, predicate, what: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in terminal_lines(page):
            if predicate(line.strip()):
                return line.strip()
        time.sleep(0.1)
    raise AssertionError(f"terminal never showed {what}; it shows:\n" + "\n".join(terminal_lines(page)))


def check_page(page: Page, name: str) -> None:
    """The page's accessibility basics hold, and its screenshot is written."""
    problems = page.eval(A11Y_PROBLEMS)
    assert problems == [], f"{name}: {problems}"
    page.screenshot(SHOTS / f"{name}.png")


def no_script_errors(page: Page) -> None:
    thrown = page.events_of("Runtime.exceptionThrown")
    assert thrown == [], json.dumps(thrown, indent=1)[:2000]


@pytest.fixture(scope="module")
def console_server() -> Iterator[Server]:
    srv = Server({"auth": {"api_key": API_KEY, "admin_api_key": ADMIN_KEY}}, name="console").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    require_backend("chromium", find_chromium() is not None,
                    "install Debian's chromium (scripts/test.sh setup does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with Chromium(SHOTS) as b:
        yield b


@pytest.fixture
def page(browser: Chromium) -> Iterator[Page]:
    p = browser.page()
    yield p
    p.close()


def login_page(page: Page, srv: Server) -> None:
    page.navigate("about:blank")
    page.navigate(f"{srv.base_url}/ui/")
    page.eval("sessionStorage.clear()")
    page.reload()
    page.wait_for("document.activeElement && document.activeElement.name === 'key'",
                  what="the focused key field of the login form")


def log_in(page: Page, key: str) -> None:
    page.eval("document.querySelector('input[name=key]').value = ''")
    page.insert_text(key)
    page.enter()  # keyboard only: Enter submits the form


def test_first_load_fits_the_asset_budget(console_server: Server, page: Page) -> None:
    page.send("Network.setCacheDisabled", {"cacheDisabled": True})
    page.events.clear()
    page.navigate(f"{console_server.base_url}/ui/")
    page.wait_for("document.querySelector('form.login')", what="the login form")
    time.sleep(0.5)  # the module graph (xterm included) finishes loading
    urls = {e["requestId"]: e["response"] for e in page.events_of("Network.responseReceived")}
    done = {e["requestId"]: e["encodedDataLength"] for e in page.events_of("Network.loadingFinished")}
    rows = []
    for rid, resp in urls.items():
        if "/ui/" not in resp["url"]:
            continue
        headers = {k.lower(): v for k, v in resp["headers"].items()}
        assert resp["status"] == 200, resp["url"]
        assert rid in done, f"{resp['url']} did not finish loading"
        rows.append((resp["url"].split("/ui/", 1)[1] or "index.html", done[rid],
                     headers.get("content-encoding", "identity")))
    page.send("Network.setCacheDisabled", {"cacheDisabled": False})
    names = {r[0] for r in rows}
    assert {"index.html", "js/main.js", "vendor/xterm.mjs", "app.css"} <= names, names
    assert all(enc == "gzip" for _, _, enc in rows), rows
    total = sum(n for _, n, _ in rows)
    lines = [f"{n:>8}  {enc:<8} {name}" for name, n, enc in sorted(rows)]
    lines.append(f"{total:>8}  total bytes transferred (headers included), budget {BUDGET}")
    (SHOTS / "asset-budget.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert total <= BUDGET, "\n".join(lines)
    no_script_errors(page)


def test_a_wrong_key_shows_an_error(console_server: Server, page: Page) -> None:
    login_page(page, console_server)
    check_page(page, "login")
    log_in(page, "not-the-key")
    msg = page.wait_for("(() => { const e = document.getElementById('login-error');"
                        " return e && !e.hidden && e.textContent; })()", what="the login error")
    assert "Wrong API key" in msg, msg
    assert page.eval("document.querySelector('input[name=key]') !== null")
    assert page.eval("sessionStorage.getItem('stacyvm.key')") is None
    check_page(page, "login-wrong-key")
    no_script_errors(page)


@pytest.mark.timeout(300)
def test_console_scenario(console_server: Server, page: Page) -> None:
    srv = console_server
    http = srv.http()
    login_page(page, srv)
    log_in(page, API_KEY)
    page.wait_for("document.querySelector('h1') && document.querySelector('h1').textContent === 'Sandboxes'"
                  " && document.querySelector('form.spawn')", what="the sandboxes page")
    page.wait_for("document.getElementById('stream').dataset.state === 'open'", what="the live event stream")

    # Keyboard: from the skip link, Tab walks the main navigation in order.
    page.eval("document.getElementById('skip').focus()")
    walked = []
    for _ in range(len(NAV) + 1):
        page.tab()
        walked.append(page.eval("document.activeElement.textContent.trim()"))
    assert walked == NAV + ["Log out"], walked

    # A sandbox spawned through the API appears within a few seconds (the event stream; the
    # fallback refetch is every 15 s).
    r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest", "metadata": {"who": "console-e2e"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    t0 = time.monotonic()
    page.wait_for(f"document.querySelector('tr[data-id=\"{sid}\"]')", timeout=5, what=f"{sid} in the list")
    appeared_s = time.monotonic() - t0
    # The text filter finds it by metadata.
    page.eval("(() => { const i = document.querySelector('input[name=text]'); i.value = 'console-e2e';"
              " i.dispatchEvent(new Event('input')); })()")
    assert page.eval("document.querySelectorAll('tbody tr[data-id]').length") == 1
    check_page(page, "sandboxes")
    page.eval("(() => { const i = document.querySelector('input[name=text]'); i.value = '';"
              " i.dispatchEvent(new Event('input')); })()")

    # Its page, opened with the keyboard (focus the link, Enter).
    page.eval(f"document.querySelector('tr[data-id=\"{sid}\"] a').focus()")
    page.enter()
    page.wait_for("document.getElementById('open-terminal')", what="the sandbox page's terminal button")
    assert page.eval("location.hash") == f"#/sandboxes/{sid}"
    page.eval("document.getElementById('open-terminal').focus()")
    page.enter()
    page.wait_for("document.querySelector('#terminal[data-attached=\"true\"]')", timeout=15,
                  what="the terminal attached")
    pid = int(page.eval("document.getElementById('terminal').dataset.pid"))
    wait_terminal_line(page, lambda l: l.endswith("#") or l.endswith("$"), "a shell prompt")
    page.type_keys("echo hi")
    page.enter()
    wait_terminal_line(page, lambda l: l == "hi", "the line `hi`")

    # The terminal follows the window: a narrower viewport, a smaller PTY (`stty size`).
    before = int(page.eval("document.getElementById('terminal').dataset.cols"))
    page.set_viewport(900, 700)
    page.wait_for(f"Number(document.getElementById('terminal').dataset.cols) < {before}", what="a refit")
    time.sleep(0.3)
    rows, cols = page.eval("[document.getElementById('terminal').dataset.rows,"
                           " document.getElementById('terminal').dataset.cols]")
    page.type_keys("stty size")
    page.enter()
    wait_terminal_line(page, lambda l: l == f"{rows} {cols}", f"`stty size` answering {rows} {cols}")
    page.send("Emulation.clearDeviceMetricsOverride")
    check_page(page, "sandbox")

    # Reload: the same process, attached again, its earlier output drawn again.
    page.reload()
    page.wait_for("document.querySelector('#terminal[data-attached=\"true\"]')", timeout=20,
                  what="the terminal re-attached after the reload")
    assert int(page.eval("document.getElementById('terminal').dataset.pid")) == pid
    wait_terminal_line(page, lambda l: l == "hi", "the earlier `hi` after the reload")
    procs = http.get(f"/api/v1/sandboxes/{sid}/processes").json()
    consoles = [p for p in procs if p["tag"] == "console" and p["state"] == "running"]
    assert [p["pid"] for p in consoles] == [pid], procs
    page.wait_for(f"document.querySelector('tr[data-pid=\"{pid}\"]')", what="the terminal in the process list")
    check_page(page, "sandbox-reloaded")

    # Exec history: an exec through the API shows up on the page, live (exec.completed).
    r = http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "echo from-the-history; exit 7"})
    assert r.status_code == 200 and r.json()["exit_code"] == 7, r.text
    page.wait_for("(() => { const t = document.querySelector('table[aria-label=\"Exec history\"]');"
                  " return t && [...t.querySelectorAll('tbody tr')].some(r => "
                  "r.textContent.includes('from-the-history') && r.cells[1].textContent === '7'); })()",
                  what="the exec in the exec history")

    # Files: upload through the file input, see it listed, read it back, download it.
    upload = SHOTS / "upload-me.txt"
    upload.write_text("from the browser\n")
    root = page.send("DOM.getDocument")["root"]["nodeId"]
    node = page.send("DOM.querySelector", {"nodeId": root, "selector": "input[name=upload]"})["nodeId"]
    page.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(upload)]})
    page.eval("[...document.querySelectorAll('button')].find(b => b.textContent === 'Upload').click()")
    download = "document.querySelector('button[aria-label=\"Download upload-me.txt\"]')"
    page.wait_for(download, what="the uploaded file listed")
    r = http.get(f"/api/v1/sandboxes/{sid}/files", params={"path": "/workspace/upload-me.txt"})
    assert r.status_code == 200 and r.content == b"from the browser\n", r.text
    downloads = SHOTS / "downloads"
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir()
    page.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    page.eval(f"{download}.click()")
    got = downloads / "upload-me.txt"
    deadline = time.monotonic() + 10
    while not (got.is_file() and got.read_bytes() == b"from the browser\n"):
        assert time.monotonic() < deadline, f"download not written: {list(downloads.iterdir())}"
        time.sleep(0.1)

    # Workers and events.
    page.eval("location.hash = '#/workers'")
    page.wait_for("document.querySelector('tr[data-id]')", what="a worker row")
    check_page(page, "workers")
    # The event log holds what arrived since this tab (re)loaded: an exec through the API.
    page.eval("location.hash = '#/events'")
    page.wait_for("document.querySelector('h1').textContent === 'Events'", what="the events page")
    r = http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "true"})
    assert r.status_code == 200, r.text
    page.wait_for("document.querySelector('tbody').textContent.includes('exec.completed')",
                  what="the exec.completed event")
    assert page.eval(f"document.querySelector('tbody').textContent.includes('{sid}')")
    page.eval("(() => { const i = document.querySelector('input[name=q]'); i.value = 'exec.started';"
              " i.dispatchEvent(new Event('input')); })()")
    assert page.eval("[...document.querySelectorAll('tbody tr')].every("
                     "r => r.textContent.includes('exec.started'))")
    check_page(page, "events")

    # Destroyed through the API: gone from the list within a few seconds.
    page.eval("location.hash = '#/sandboxes'")
    page.wait_for(f"document.querySelector('tr[data-id=\"{sid}\"]')", what=f"{sid} listed again")
    assert http.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
    page.wait_for(f"!document.querySelector('tr[data-id=\"{sid}\"]')", timeout=5, what=f"{sid} gone")
    check_page(page, "sandboxes-after-destroy")
    no_script_errors(page)
    print(f"sandbox appeared in the list {appeared_s:.2f} s after its spawn answered")


def test_ui_routes_and_headers(console_server: Server) -> None:
    with httpx.Client(base_url=console_server.base_url, timeout=10) as c:
        for path in ("/ui", "/ui/"):
            r = c.get(path, headers={"Accept-Encoding": "gzip"})
            assert r.status_code == 200, path
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert r.headers["content-encoding"] == "gzip"
            assert "default-src 'self'" in r.headers["content-security-policy"]
            assert '<script type="module" src="/ui/js/main.js">' in r.text
        etag = r.headers["etag"]
        assert c.get("/ui/", headers={"If-None-Match": etag}).status_code == 304
        assert c.get("/ui/js/nope.js").status_code == 404
        # The API behind it still wants the key.
        assert c.get("/api/v1/sandboxes").status_code == 401


def test_ui_off_removes_the_routes() -> None:
    srv = Server({"server": {"ui": False}}, name="console-off").start()
    try:
        assert httpx.get(f"{srv.base_url}/ui/", timeout=10).status_code == 404
        assert httpx.get(f"{srv.base_url}/ui/js/main.js", timeout=10).status_code == 404
    finally:
        srv.stop()


def goto(page: Page, hash_: str, ready: str, what: str) -> None:
    page.eval(f"location.hash = '{hash_}'")
    page.wait_for(ready, what=what)


SPAWNS_IN_CHART = ("[...document.querySelectorAll('#chart-spawns rect[data-series=spawns]')]"
                   ".reduce((a, r) => a + Number(r.dataset.value), 0)")


@pytest.mark.timeout(180)
def test_charts_and_read_only_pages(console_server: Server, page: Page) -> None:
    srv = console_server
    http = srv.http()
    login_page(page, srv)
    log_in(page, API_KEY)
    page.wait_for("document.querySelector('form.spawn')", what="the sandboxes page")
    page.wait_for("document.getElementById('stream').dataset.state === 'open'", what="the live event stream")

    # Charts: what the chart shows before, then a spawn through the API shows up (the page
    # refetches on the sandbox events; the 15 s poll is the fallback).
    goto(page, "#/charts", "document.querySelector('#chart-spawns svg.chart')", "the spawns chart")
    before = page.eval(SPAWNS_IN_CHART)
    assert page.eval("Number(document.getElementById('charts-total').dataset.spawns)") == before
    r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest", "metadata": {"who": "charts-e2e"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    page.wait_for(f"{SPAWNS_IN_CHART} >= {before + 1}", timeout=20, what="the spawn in the spawns chart")
    assert page.eval("Number(document.getElementById('charts-total').dataset.spawns)") >= before + 1
    # The latency chart has the mock's p50 and p99 lines, the summary table its row.
    assert page.eval("document.querySelectorAll('#chart-latency circle[data-series=\"mock:p50\"]').length") >= 1
    assert page.eval("!!document.querySelector('#chart-latency path.line.dashed')")
    assert page.eval("!!document.querySelector('tr[data-provider=mock]')")
    # The server samples running sandboxes once a minute: the active chart is drawn either way.
    assert page.eval("!!document.querySelector('#chart-active svg.chart')")
    # The server's own document agrees with the chart.
    hist = http.get("/api/v1/metrics/history").json()
    assert sum(m["spawns"] for m in hist["minutes"]) >= before + 1
    check_page(page, "charts")

    # Templates: one made through the API is listed and searchable.
    r = http.post("/api/v1/templates", json={"name": "console-e2e", "image": "alpine:latest",
                                             "memory_mb": 256, "description": "made by the console test"})
    assert r.status_code in (200, 201), r.text
    goto(page, "#/templates", "document.querySelector('tr[data-id=\"console-e2e\"]')", "the template row")
    page.eval("(() => { const i = document.querySelector('input[name=q]'); i.value = 'made by the console';"
              " i.dispatchEvent(new Event('input')); })()")
    assert page.eval("document.querySelectorAll('tbody tr[data-id]').length") == 1
    check_page(page, "templates")

    # Quotas: written with the admin key, listed with the API key.
    admin = srv.http(api_key=ADMIN_KEY)
    r = admin.put("/api/v1/quotas/console-owner", json={"max_sandboxes": 3, "max_ttl": "1h"})
    assert r.status_code == 200, r.text
    goto(page, "#/quotas", "document.querySelector('tr[data-id=\"console-owner\"]')", "the quota row")
    assert "3" in page.eval("document.querySelector('tr[data-id=\"console-owner\"]').textContent")
    assert "with a quota" in page.eval("document.getElementById('quota-summary').textContent")
    check_page(page, "quotas")

    # Snapshots: one taken through the API is listed.
    r = http.post(f"/api/v1/sandboxes/{sid}/snapshots", json={"name": "console-snap"})
    assert r.status_code == 201, r.text
    snap = r.json()["id"]
    goto(page, "#/snapshots", f"document.querySelector('tr[data-id=\"{snap}\"]')", "the snapshot row")
    assert "console-snap" in page.eval(f"document.querySelector('tr[data-id=\"{snap}\"]').textContent")
    check_page(page, "snapshots")
    # Volumes: made with the page's form, then listed (the server has it too).
    goto(page, "#/volumes", "document.querySelector('form[aria-label=\"Create a volume\"]')", "the volumes page")
    page.eval("(() => { document.querySelector('input[name=volume-name]').value = 'console-vol';"
              " document.querySelector('form[aria-label=\"Create a volume\"] button').click(); })()")
    page.wait_for("document.querySelector('tr[data-id=\"console-vol\"]')", what="the new volume's row")
    assert http.get("/api/v1/volumes/console-vol").status_code == 200
    check_page(page, "volumes")
    # Images: no route lists them.
    goto(page, "#/images", "document.querySelector('[data-no-route=true]')", "the images note")
    assert "No API route lists" in page.eval("document.querySelector('main').textContent")
    check_page(page, "images")

    # Admin audit with the API key: the 403 is shown where the list would be.
    goto(page, "#/audit", "document.querySelector('.failure[role=alert]')", "the audit page's 403")
    assert page.eval("document.querySelector('.failure').dataset.status") == "403"
    assert "admin key" in page.eval("document.querySelector('.failure').textContent")
    check_page(page, "audit-forbidden")
    no_script_errors(page)

    # With the admin key: rows (the quota write above was audited), searchable, filterable.
    page.eval("document.getElementById('logout').click()")
    page.wait_for("document.querySelector('input[name=key]')", what="the login form")
    log_in(page, ADMIN_KEY)
    page.wait_for("document.querySelector('form.spawn')", what="the sandboxes page")
    goto(page, "#/audit", "document.querySelector('tbody tr[data-id]')", "an audit row")
    assert page.eval("document.querySelector('tbody').textContent.includes('/api/v1/quotas/console-owner')")
    page.eval("(() => { const i = document.querySelector('input[name=q]'); i.value = 'quotas/console-owner';"
              " i.dispatchEvent(new Event('input')); })()")
    assert page.eval("[...document.querySelectorAll('tbody tr[data-id]')].every("
                     "r => r.textContent.includes('/api/v1/quotas/console-owner'))")
    # The server-side filter: method PUT only.
    page.eval("(() => { const s = document.querySelector('select[name=method]'); s.value = 'PUT';"
              " s.form.requestSubmit(); })()")
    page.wait_for("[...document.querySelectorAll('tbody tr[data-id]')].length > 0 && "
                  "[...document.querySelectorAll('tbody tr[data-id] td:nth-child(3)')].every(t => t.textContent === 'PUT')",
                  what="only PUT rows")
    check_page(page, "audit")

    assert http.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
    no_script_errors(page)


@pytest.fixture(scope="module")
def big_server() -> Iterator[Server]:
    srv = Server({"auth": {"api_key": API_KEY}, "logging": {"level": "warn"}}, name="console-1k").start()
    yield srv
    srv.stop()


@pytest.mark.timeout(300)
def test_a_thousand_sandboxes_scroll_virtualised(big_server: Server, page: Page) -> None:
    srv = big_server
    n = 1000

    def spawn(i: int) -> str:
        with srv.http() as c:
            r = c.post("/api/v1/sandboxes", json={"image": "alpine:latest", "ttl": "1h",
                                                  "metadata": {"n": str(i)}})
            assert r.status_code == 201, r.text
            return r.json()["id"]

    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(spawn, range(n)))
    login_page(page, srv)
    log_in(page, API_KEY)
    page.wait_for(f"document.querySelector('p.count') && document.querySelector('p.count').dataset.total === '{n}'",
                  timeout=20, what=f"{n} sandboxes counted")
    rows = page.eval("document.querySelectorAll('tbody tr[data-id]').length")
    assert 0 < rows < 100, f"{rows} rows in the DOM for {n} sandboxes"
    assert page.eval("document.querySelector('table.vt').getAttribute('aria-rowcount')") == str(n + 1)
    newest = page.eval("document.querySelector('tbody tr[data-id]').dataset.id")
    assert newest in ids
    check_page(page, "sandboxes-1000")
    # Scrolled to the end: the oldest rows are drawn, still only a window of them.
    page.eval("(() => { const v = document.querySelector('.vscroll'); v.scrollTop = v.scrollHeight; })()")
    page.wait_for("(() => { const r = [...document.querySelectorAll('tbody tr[data-id]')];"
                  f" return r.length && r[r.length - 1].getAttribute('aria-rowindex') === '{n + 1}'; }})()",
                  what="the last row drawn after scrolling")
    assert page.eval("document.querySelectorAll('tbody tr[data-id]').length") < 100
    last = page.eval("[...document.querySelectorAll('tbody tr[data-id]')].pop().dataset.id")
    assert last in ids
    # A filter narrows the 1,000 to one, found without scrolling.
    page.eval("(() => { const i = document.querySelector('input[name=text]'); i.value = 'n=417';"
              " i.dispatchEvent(new Event('input')); })()")
    page.wait_for("document.querySelectorAll('tbody tr[data-id]').length === 1", what="the one match")
    assert page.eval("document.querySelector('tbody tr[data-id]').dataset.id") == ids[417]
    check_page(page, "sandboxes-1000-scrolled")
    no_script_errors(page)
