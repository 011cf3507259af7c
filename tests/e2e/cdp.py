"""A headless Chromium driven over the Chrome DevTools Protocol (its WebSocket), for the
console's browser tests: no Selenium, no Playwright, no driver download. Debian's `chromium`
and the `websockets` package of the e2e venv are all it needs.

    with Chromium(work_dir) as browser:
        page = browser.page()
        page.navigate(url)
        page.wait_for("document.querySelector('h1')")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(RuntimeError):
    pass


class Chromium:
    """One headless browser process with its own profile under `work_dir`."""

    def __init__(self, work_dir: Path, width: int = 1280, height: int = 900):
        self.work_dir = work_dir
        self.profile = work_dir / "chromium-profile"
        shutil.rmtree(self.profile, ignore_errors=True)
        self.profile.mkdir(parents=True)
        self.log_path = work_dir / "chromium.log"
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Chromium":
        exe = find_chromium()
        if exe is None:
            raise CdpError("chromium not found")
        log = open(self.log_path, "ab")
        args = [
            exe, "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={self.profile}", f"--window-size={self.size[0]},{self.size[1]}",
            "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--mute-audio", "--hide-scrollbars", "about:blank",
        ]
        if os.geteuid() == 0:
            # Chromium's own sandbox refuses to run as root.
            args.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        # Chromium writes the port it picked into the profile.
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
            if port_file.is_file():
                lines = port_file.read_text().splitlines()
                if lines and lines[0].isdigit():
                    self.port = int(lines[0])
                    return self
            time.sleep(0.1)
        self.close()
        raise CdpError(f"chromium did not open its DevTools port: {self.log_tail()}")

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def page(self) -> "Page":
        targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=10).json()
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise CdpError(f"no page target: {targets}")
        return Page(pages[0]["webSocketDebuggerUrl"])


class Page:
    """One tab: commands with their answers, and the events that arrived meanwhile."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        # Headless tabs are never the focused window; focus and :focus behave as if they were.
        self.send("Emulation.setFocusEmulationEnabled", {"enabled": True})

    def close(self) -> None:
        self.ws.close()

    # -- protocol ----------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer within {timeout}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def drain(self) -> None:
        """Collects events that arrived without a command waiting."""
        while True:
            try:
                msg = json.loads(self.ws.recv(timeout=0.05))
            except TimeoutError:
                return
            if "method" in msg:
                self.events.append(msg)

    def events_of(self, method: str) -> list[dict]:
        self.drain()
        return [e["params"] for e in self.events if e["method"] == method]

    # -- page --------------------------------------------------------------------------------
    def eval(self, expression: str, timeout: float = 30) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in r:
            raise CdpError(f"{expression!r} threw: {json.dumps(r['exceptionDetails'])[:800]}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10, what: str = "") -> Any:
        """Polls `expression` until it is truthy; returns its value (a DOM node: True)."""
        deadline = time.monotonic() + timeout
        last = None
        probe = f"(v => (v instanceof Node ? true : v))({expression})"
        while time.monotonic() < deadline:
            last = self.eval(probe)
            if last:
                return last
            time.sleep(0.1)
        raise CdpError(f"timed out after {timeout}s waiting for {what or expression} (last: {last!r})")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", timeout=30)

    def reload(self) -> None:
        self.send("Page.reload", {"ignoreCache": False})
        time.sleep(0.2)
        self.wait_for("document.readyState === 'complete'", timeout=30)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def set_viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # -- input -------------------------------------------------------------------------------
    def insert_text(self, text: str) -> None:
        self.send("Input.insertText", {"text": text})

    def key(self, key: str, code: str, vk: int, text: str = "") -> None:
        down = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk}
        if text:
            down["text"] = text
        else:
            down["type"] = "rawKeyDown"
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code,
                                             "windowsVirtualKeyCode": vk})

    def type_keys(self, text: str) -> None:
        """Types printable ASCII as key presses (keydown with text, keyup), as a keyboard does."""
        for ch in text:
            if ch.isalpha():
                code, vk = f"Key{ch.upper()}", ord(ch.upper())
            elif ch.isdigit():
                code, vk = f"Digit{ch}", ord(ch)
            elif ch == " ":
                code, vk = "Space", 32
            else:
                code, vk = "", 0
            self.key(ch, code, vk, ch)

    def enter(self) -> None:
        self.key("Enter", "Enter", 13, "\r")

    def tab(self) -> None:
        self.key("Tab", "Tab", 9)
