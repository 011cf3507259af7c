"""The E2B-compatible API (docs/e2b.md) driven by E2B's own JS SDK (`e2b` from npm, pinned in
e2b_js/package.json and package-lock.json), unchanged, under node.

e2b_js/core_flow.mjs runs the core flow (create, commands foreground/background/list/kill,
files text/bytes/list/exists, connect, list by metadata, kill, connect-after-kill) and prints
`SANDBOX <id>` then `OK <n checks>`. This module starts the server, runs the script with the
SDK's environment variables pointing at it, and checks the effect on the server itself: the
sandbox the script created is destroyed at the end.

Needs node and the installed packages (scripts/test.sh step setup runs `npm ci` in e2b_js):
skipped without them locally, failed under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Server, require_backend

JS_DIR = Path(__file__).resolve().parent / "e2b_js"
SCRIPT = JS_DIR / "core_flow.mjs"
NODE_TIMEOUT_S = 180
# E2B SDKs check the key's shape (`e2b_<hex>`): the conftest default key is not one.
E2B_KEY = "e2b_" + secrets.token_hex(20)

pytestmark = pytest.mark.backend("node")


def _require_node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    require_backend("node", bool(node and npm),
                    "node and npm are needed (apt-get install nodejs npm; scripts/test.sh setup)")
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["e2b"]
    installed_pkg = JS_DIR / "node_modules" / "e2b" / "package.json"
    installed = json.loads(installed_pkg.read_text())["version"] if installed_pkg.is_file() else None
    require_backend("node", installed == pinned,
                    f"e2b@{pinned} is not installed in {JS_DIR} (found {installed}); "
                    f"run `npm ci` there (scripts/test.sh setup does)")
    return node


def _sdk_env(srv: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update({
        "E2B_API_URL": srv.base_url,
        "E2B_SANDBOX_URL": srv.base_url,
        "E2B_API_KEY": E2B_KEY,
        "E2B_DOMAIN": "localhost",
    })
    return env


@pytest.mark.timeout(NODE_TIMEOUT_S + 60)
def test_e2b_js_sdk_core_flow(server_factory):
    node = _require_node()
    srv = server_factory({"auth": {"api_key": E2B_KEY}}, name="e2b-js")
    assert srv.api_key == E2B_KEY and srv.auth_configured

    def report(what: str, out: str, err: str) -> str:
        return (f"{what}\n--- node stdout ---\n{out}\n--- node stderr ---\n{err}\n"
                f"--- {srv.log_path} (tail) ---\n{srv.log_tail()}")

    try:
        proc = subprocess.run([node, str(SCRIPT)], cwd=JS_DIR, env=_sdk_env(srv),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=NODE_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        pytest.fail(report(f"node {SCRIPT.name} timed out after {NODE_TIMEOUT_S}s",
                           text(e.stdout), text(e.stderr)))

    assert proc.returncode == 0 and re.search(r"^OK \d+ checks$", proc.stdout, re.M), report(
        f"node {SCRIPT.name} exited with {proc.returncode}", proc.stdout, proc.stderr)

    # The script's word is not enough: the sandbox it created must be gone on the server.
    m = re.search(r"^SANDBOX (\S+)$", proc.stdout, re.M)
    assert m, report("the script printed no SANDBOX line", proc.stdout, proc.stderr)
    sid = m.group(1)
    with srv.http() as http:
        r = http.get("/api/v1/sandboxes")
        assert r.status_code == 200, r.text
        states = [s.get("state") for s in r.json() if s["id"] == sid]
        assert all(s == "destroyed" for s in states), (
            f"sandbox {sid} created by the JS SDK is not destroyed: native list says {states}")
        r = http.get(f"/api/v1/sandboxes/{sid}")
        assert r.status_code == 404 or (r.status_code == 200 and r.json().get("state") == "destroyed"), (
            f"GET /api/v1/sandboxes/{sid}: {r.status_code} {r.text[:300]}")
        # Nothing else of the JS run is left running either.
        running = [s["id"] for s in http.get("/api/v1/sandboxes").json()
                   if s.get("state") not in ("destroyed", None)]
        assert running == [], f"sandboxes still alive after the JS flow: {running}"
