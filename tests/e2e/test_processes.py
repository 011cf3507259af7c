"""Background processes (sandbox-model.md §1) through the real server: start/list/get, output
NDJSON with follow and `since` resume, base64 byte-exactness, stdin with close, signals, a
process outliving its client, the attach WebSocket with ten clients, a PTY (`tty`, `stty size`,
resize, Ctrl-C), the error answers, `stacyvm shell`/`ps`/`attach`, and (docker, remote) a control
plane killed with -9 and restarted.

Runs on the mock (the agent as a host process), on docker (the agent bind-mounted into the
container) and remote (a mock sandbox on a real `stacyvm worker`, every call through its RPC). The agent binary: $STACYVM_AGENT, else the repository's release build
(cd crates/stacyvm-agent && cargo build --release).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import websockets
from conftest import REPO_ROOT, Server, assert_error, require_backend
from test_remote_faults import TOKEN, Worker

AGENT = Path(os.environ.get(
    "STACYVM_AGENT",
    REPO_ROOT / "crates/stacyvm-agent/target/x86_64-unknown-linux-gnu/release/stacyvm-agent"))
DOCKER_IMAGE = "stacyvm-test/busybox:latest"


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "image", "inspect", DOCKER_IMAGE],
                          capture_output=True).returncode == 0


def _config(backend: str) -> dict:
    cfg: dict = {"processes": {"agent": str(AGENT.resolve())}}
    if backend == "docker":
        cfg["providers"] = {"default": "docker",
                            "docker": {"enabled": True, "default_image": DOCKER_IMAGE}}
        cfg["defaults"] = {"image": DOCKER_IMAGE}
    return cfg


@pytest.fixture(scope="module", params=["mock", "docker", "remote"])
def backend(request) -> str:
    require_backend("agent", AGENT.is_file(), f"no agent at {AGENT}")
    if request.param == "docker":
        require_backend("docker", _docker_ok(), f"docker or {DOCKER_IMAGE} missing")
    return request.param


class Cluster:
    """A control plane, plus for `remote` a worker that every sandbox is placed on."""

    def __init__(self, backend: str, name: str):
        self.backend = backend
        cfg = _config(backend)
        if backend == "remote":
            cfg["auth"] = {"worker_token": TOKEN}
        self.cp = Server(cfg, name=name)
        self.worker: Worker | None = None

    def start(self) -> Server:
        self.cp.start()
        if self.backend == "remote":
            if self.worker is None:
                self.worker = Worker(self.cp, config_extra={
                    "processes": {"agent": str(AGENT.resolve())}}).start()
            with self.cp.http() as c:
                # Placement must pick the worker, not the control plane's own `local`.
                c.delete("/api/v1/admin/workers/local")
        return self.cp

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.cp.stop()


@pytest.fixture(scope="module")
def srv(backend, _clean_work_root) -> Iterator[Server]:
    cluster = Cluster(backend, f"procs-{backend}")
    yield cluster.start()
    cluster.stop()


@pytest.fixture(scope="module")
def client(srv) -> Iterator[httpx.Client]:
    with srv.http(timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def sid(backend, client) -> Iterator[str]:
    r = client.post("/api/v1/sandboxes", json={})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    if backend == "remote":
        assert r.json()["worker_id"] == "worker-a", r.text
    yield sid
    client.delete(f"/api/v1/sandboxes/{sid}")


def start(client: httpx.Client, sid: str, **body) -> dict:
    r = client.post(f"/api/v1/sandboxes/{sid}/processes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def records(client: httpx.Client, sid: str, pid: int, **query) -> list[dict]:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()}
    with client.stream("GET", f"/api/v1/sandboxes/{sid}/processes/{pid}/output",
                       params=params) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.iter_lines() if line]


def data(recs: list[dict]) -> bytes:
    return b"".join(base64.b64decode(r["data"]) for r in recs
                    if r["stream"] in ("stdout", "stderr", "pty"))


def wait_exited(client: httpx.Client, sid: str, pid: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        p = client.get(f"/api/v1/sandboxes/{sid}/processes/{pid}").json()
        if p["state"] == "exited" or time.monotonic() > deadline:
            return p
        time.sleep(0.05)


def test_start_list_get(client, sid):
    p = start(client, sid, command="echo hi; sleep 30", tag="web")
    assert set(p) == {"pid", "tag", "command", "args", "pty", "stdin", "state", "exit_code",
                      "signal", "started_at", "ended_at", "next_seq"}
    assert (p["state"], p["tag"], p["exit_code"], p["ended_at"]) == ("running", "web", None, None)
    listed = client.get(f"/api/v1/sandboxes/{sid}/processes").json()
    assert listed[0]["pid"] == p["pid"], "newest first"
    got = client.get(f"/api/v1/sandboxes/{sid}/processes/{p['pid']}").json()
    assert got["pid"] == p["pid"] and got["command"] == "echo hi; sleep 30"
    client.post(f"/api/v1/sandboxes/{sid}/processes/{p['pid']}/signal", json={"signal": "KILL"})


def test_output_follow_and_since_resume(client, sid):
    p = start(client, sid, command="for i in 1 2 3 4; do echo line$i; sleep 0.2; done; exit 3")
    recs = records(client, sid, p["pid"], encoding="base64")
    assert recs[-1]["stream"] == "exit" and recs[-1]["exit_code"] == 3
    assert data(recs) == b"line1\nline2\nline3\nline4\n"
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(seqs)
    # Resume after the first record: the rest, without a duplicate byte.
    rest = records(client, sid, p["pid"], since=recs[0]["seq"] + 1, follow=False,
                   encoding="base64")
    assert data(recs[:1]) + data(rest) == data(recs)
    assert rest[-1]["stream"] == "exit"
    # Beyond the end, not following: nothing.
    assert records(client, sid, p["pid"], since=10**9, follow=False) == []


def test_base64_is_byte_exact(client, sid):
    p = start(client, sid, command=r"printf 'a\000\377b'; printf 'e\376' >&2")
    recs = records(client, sid, p["pid"], encoding="base64")
    out = b"".join(base64.b64decode(r["data"]) for r in recs if r["stream"] == "stdout")
    err = b"".join(base64.b64decode(r["data"]) for r in recs if r["stream"] == "stderr")
    assert (out, err) == (b"a\x00\xffb", b"e\xfe")
    text = records(client, sid, p["pid"], follow=False)
    joined = "".join(r.get("data", "") for r in text if r["stream"] == "stdout")
    assert joined == "a\x00\ufffdb"


def test_stdin_with_close(client, sid):
    p = start(client, sid, command="cat", stdin=True)
    url = f"/api/v1/sandboxes/{sid}/processes/{p['pid']}/stdin"
    r = client.post(url, content=b"hello\x00\n")
    assert r.status_code == 200 and r.json() == {"written": 7}, r.text
    r = client.post(url, params={"close": "true"}, content=b"bye")
    assert r.json() == {"written": 3}
    recs = records(client, sid, p["pid"], encoding="base64")
    assert data(recs) == b"hello\x00\nbye"
    assert recs[-1]["exit_code"] == 0
    assert_error(client.post(url, content=b"x"), 409, "PROCESS_EXITED")


def test_signal(client, sid):
    p = start(client, sid, command="sleep 100")
    r = client.post(f"/api/v1/sandboxes/{sid}/processes/{p['pid']}/signal",
                    json={"signal": "SIGTERM"})
    assert r.status_code == 200, r.text
    done = wait_exited(client, sid, p["pid"])
    assert (done["state"], done["signal"], done["exit_code"]) == ("exited", "TERM", 143)
    assert done["ended_at"] is not None


def test_process_survives_client_disconnect(client, sid):
    p = start(client, sid, command="sleep 1.5; echo done")
    with client.stream("GET", f"/api/v1/sandboxes/{sid}/processes/{p['pid']}/output") as r:
        assert r.status_code == 200
    # The follower went away at once; the process runs on and finishes.
    done = wait_exited(client, sid, p["pid"])
    assert (done["state"], done["exit_code"]) == ("exited", 0)
    assert data(records(client, sid, p["pid"], encoding="base64")) == b"done\n"


async def _attach_all(srv: Server, sid: str, pid: int, n: int) -> list[tuple[bytes, dict]]:
    url = f"{srv.ws_url}/api/v1/sandboxes/{sid}/processes/{pid}/attach"

    async def one() -> tuple[bytes, dict]:
        got, exit_ = b"", {}
        async with websockets.connect(url, additional_headers=srv.headers(),
                                      max_size=None) as ws:
            async for m in ws:
                if isinstance(m, bytes):
                    got += m
                else:
                    exit_ = json.loads(m)
            assert ws.close_code == 1000
        return got, exit_

    return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 60)


def test_attach_ten_clients_see_identical_bytes(srv, client, sid):
    p = start(client, sid, command="sleep 1; seq 1 2000; printf '\\000\\377'; exit 4")
    got = asyncio.run(_attach_all(srv, sid, p["pid"], 10))
    want = "".join(f"{i}\n" for i in range(1, 2001)).encode() + b"\x00\xff"
    for b, exit_ in got:
        assert b == want
        assert exit_ == {"type": "exit", "exit_code": 4}


async def _pty_session(srv: Server, sid: str, pid: int) -> tuple[bytes, dict]:
    url = f"{srv.ws_url}/api/v1/sandboxes/{sid}/processes/{pid}/attach"
    out = b""
    async with websockets.connect(url, additional_headers=srv.headers(), max_size=None) as ws:

        async def until(marker: bytes, timeout: float = 15) -> None:
            nonlocal out
            async with asyncio.timeout(timeout):
                while marker not in out:
                    m = await ws.recv()
                    if isinstance(m, bytes):
                        out += m

        await ws.send(b"tty; echo M$((0+1))\n")
        await until(b"M1\r\n")
        await ws.send(b"stty size; echo M$((0+2))\n")
        await until(b"M2\r\n")
        await ws.send(json.dumps({"type": "resize", "cols": 100, "rows": 30}))
        await asyncio.sleep(0.3)
        await ws.send(b"stty size; echo M$((0+3))\n")
        await until(b"M3\r\n")
        await ws.send(b"sleep 100\n")
        await asyncio.sleep(0.5)
        await ws.send(b"\x03")
        await ws.send(b"echo after=$?\n")
        await until(b"after=130\r\n")
        await ws.send(b"exit 3\n")
        exit_: dict = {}
        async with asyncio.timeout(15):
            async for m in ws:
                if isinstance(m, bytes):
                    out += m
                else:
                    exit_ = json.loads(m)
    return out, exit_


def test_pty_tty_size_resize_ctrl_c(srv, client, sid):
    p = start(client, sid, command="sh", pty={"cols": 80, "rows": 24})
    assert p["pty"] is True
    out, exit_ = asyncio.run(_pty_session(srv, sid, p["pid"]))
    assert b"/dev/pts/" in out, out
    assert b"24 80" in out and b"30 100" in out, out
    assert b"after=130" in out
    assert exit_ == {"type": "exit", "exit_code": 3}
    recs = records(client, sid, p["pid"], follow=False)
    assert {r["stream"] for r in recs} <= {"pty", "exit", "gap"}


def test_errors(srv, client, sid):
    base = f"/api/v1/sandboxes/{sid}/processes"
    assert_error(client.get(f"{base}/999999"), 404, "PROCESS_NOT_FOUND")
    assert_error(client.get(f"{base}/999999/output"), 404, "PROCESS_NOT_FOUND")
    ws_headers = {"Connection": "Upgrade", "Upgrade": "websocket",
                  "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert_error(client.get(f"{base}/999999/attach", headers=ws_headers), 404,
                 "PROCESS_NOT_FOUND")
    p = start(client, sid, command="sleep 100")
    url = f"{base}/{p['pid']}"
    assert_error(client.post(f"{url}/stdin", content=b"x"), 409, "STDIN_CLOSED")
    assert_error(client.post(f"{url}/resize", json={"cols": 10, "rows": 10}), 409, "NOT_A_PTY")
    assert_error(client.post(f"{url}/signal", json={"signal": "SIGSEGV"}), 400, "BAD_REQUEST")
    assert_error(client.post(base, json={"command": "x", "timeout": "-1s"}), 400, "BAD_REQUEST")
    assert_error(client.post(base, json={"command": "x", "pty": {"cols": 0, "rows": 1}}), 400,
                 "BAD_REQUEST")
    # None of that touched the process.
    assert client.get(url).json()["state"] == "running"
    client.post(f"{url}/signal", json={"signal": "KILL"})


# Not on the mock: its local sandboxes die with their control plane (MockProvider::persistent
# is not wired into the server yet), so only backends whose sandboxes outlive it are run.
@pytest.mark.parametrize("restart_backend", ["docker", "remote"])
def test_control_plane_kill9_and_restart(restart_backend, _clean_work_root):
    """The process outlives its control plane: after kill -9 and a restart on the same
    database it is still listed and its output resumes from the last seen seq, no byte lost or
    duplicated. Docker and remote: the mock's local sandboxes die with their control plane."""
    backend = restart_backend
    cluster = Cluster(backend, f"procs-kill9-{backend}")
    s = cluster.start()
    try:
        with s.http(timeout=60) as c:
            sid = c.post("/api/v1/sandboxes", json={}).json()["id"]
            p = start(c, sid, command="i=0; while [ $i -lt 60 ]; do echo n$i; i=$((i+1)); "
                                      "sleep 0.05; done")
            # Exits only when told to: its exit event must come from the restarted plane.
            gate = start(c, sid, command="while [ ! -f go ]; do sleep 0.1; done; exit 7")
            time.sleep(0.5)
            first = records(c, sid, p["pid"], follow=False, encoding="base64")
            assert first, "some output before the kill"
        assert s.proc is not None
        os.kill(s.proc.pid, signal.SIGKILL)
        s.proc.wait(timeout=10)
        s.proc = None
        cluster.start()
        with s.http(timeout=60) as c:
            listed = c.get(f"/api/v1/sandboxes/{sid}/processes").json()
            assert p["pid"] in [x["pid"] for x in listed], listed
            rest = records(c, sid, p["pid"], since=first[-1]["seq"] + 1, encoding="base64")
            assert rest[-1]["stream"] == "exit" and rest[-1]["exit_code"] == 0
            got = data(first) + data(rest)
            assert got == "".join(f"n{i}\n" for i in range(60)).encode()

            # The restarted plane watches processes it did not start: their exits are events.
            events: list[dict] = []
            done = threading.Event()

            def listen():
                with s.http(timeout=httpx.Timeout(5, read=None)) as ev:
                    with ev.stream("GET", "/api/v1/events") as r:
                        for line in r.iter_lines():
                            if line.startswith("data: "):
                                events.append(json.loads(line[6:]))
                            if done.is_set():
                                return
            t = threading.Thread(target=listen, daemon=True)
            t.start()
            time.sleep(0.5)
            assert c.get(f"/api/v1/sandboxes/{sid}/processes/{gate['pid']}").json()["state"] == "running"
            w = c.post(f"/api/v1/sandboxes/{sid}/files", json={"path": "/workspace/go", "content": ""})
            assert w.status_code < 300, w.text
            deadline = time.monotonic() + 20
            exited = []
            while not exited and time.monotonic() < deadline:
                exited = [e for e in events if e["type"] == "process.exited"
                          and e.get("data", {}).get("pid") == gate["pid"]]
                time.sleep(0.1)
            done.set()
            assert exited, f"no process.exited for {gate['pid']}: {events}"
            assert exited[0]["sandbox_id"] == sid and exited[0]["data"]["exit_code"] == 7
            c.delete(f"/api/v1/sandboxes/{sid}")
    finally:
        cluster.stop()


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def _pane_until(session: str, needle: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        pane = _tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session)
        if needle in pane or time.monotonic() > deadline:
            assert needle in pane, f"{needle!r} not on the pane:\n{pane}"
            return pane
        time.sleep(0.1)


def test_cli_shell_under_tmux(srv, client, sid, tmp_path):
    """`stacyvm shell` as a person uses it: a real terminal (tmux), raw mode, the size of the
    window and its changes, Ctrl-C to the foreground job, the exit code passed on and the local
    terminal restored."""
    require_backend("tmux", shutil.which("tmux") is not None, "tmux not installed")
    binary = os.environ.get("STACYVM_BIN", str(REPO_ROOT / "target/debug/stacyvm"))
    session = f"stacyvm-shell-{os.getpid()}-{sid}"
    key = f" --api-key {srv.api_key}" if srv.api_key else ""
    script = (f"stty -g > {tmp_path}/before; {binary} shell --server {srv.base_url}{key} {sid}; "
              f"echo EXITED=$?; stty -g > {tmp_path}/after; sleep 60")
    _tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", script)
    try:
        _tmux("send-keys", "-t", session, "echo ready-$((40+2))", "Enter")
        _pane_until(session, "ready-42")
        _tmux("send-keys", "-t", session, "tty", "Enter")
        _pane_until(session, "/dev/pts/")
        rows, cols = _tmux("display", "-p", "-t", session,
                           "#{pane_height} #{pane_width}").split()
        _tmux("send-keys", "-t", session, "stty size", "Enter")
        _pane_until(session, f"{rows} {cols}")
        _tmux("resize-window", "-t", session, "-x", "120", "-y", "40")
        rows2, cols2 = _tmux("display", "-p", "-t", session,
                             "#{pane_height} #{pane_width}").split()
        assert (rows2, cols2) != (rows, cols)
        time.sleep(0.5)
        _tmux("send-keys", "-t", session, "stty size", "Enter")
        _pane_until(session, f"{rows2} {cols2}")
        _tmux("send-keys", "-t", session, "sleep 100", "Enter")
        time.sleep(0.5)
        _tmux("send-keys", "-t", session, "C-c")
        _tmux("send-keys", "-t", session, "echo rc=$?", "Enter")
        _pane_until(session, "rc=130")
        _tmux("send-keys", "-t", session, "exit 7", "Enter")
        _pane_until(session, "EXITED=7")
        deadline = time.monotonic() + 5
        # The redirection creates the file before `stty -g` has written to it.
        after = tmp_path / "after"
        while not (after.exists() and after.read_text().endswith("\n")) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text(), \
            "the local terminal was not restored"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_cli_ps_and_attach(srv, client, sid):
    binary = os.environ.get("STACYVM_BIN", str(REPO_ROOT / "target/debug/stacyvm"))
    base = [binary, "--server", srv.base_url] + (["--api-key", srv.api_key] if srv.api_key else [])
    p = start(client, sid, command="cat", stdin=True, tag="catter")
    ps = subprocess.run(base + ["ps", sid], capture_output=True, text=True, timeout=30)
    assert ps.returncode == 0, ps.stderr
    assert str(p["pid"]) in ps.stdout and "catter" in ps.stdout
    client.post(f"/api/v1/sandboxes/{sid}/processes/{p['pid']}/stdin", content=b"before\n")
    # attach: output from the start, stdin passed through, EOF closes the process's stdin.
    r = subprocess.run(base + ["attach", sid, str(p["pid"])], input=b"typed\n",
                       capture_output=True, timeout=30)
    assert r.stdout == b"before\ntyped\n", r
    assert r.returncode == 0
    missing = subprocess.run(base + ["attach", sid, "999999"], capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode != 0 and "PROCESS_NOT_FOUND" in missing.stderr
