"""The SDK end-to-end suite on the docker provider (docs/docker-provider.md): lifecycle, exec,
streaming, files (binary-exact, octal modes, absolute list paths), logs, stats, extend, destroy,
and the hardening seen through the API (mount, PID namespace, pids limit, memory limit,
read-only root). One server for the module, `read_only_rootfs: true`, a handful of sandboxes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from typing import Iterator

import httpx
import pytest
import stacyvm
from conftest import (
    GO_DURATION_RE,
    SANDBOX_ID_RE,
    Server,
    assert_error,
    require_backend,
    ttl_seconds,
)

IMAGE = "stacyvm-test/busybox:latest"
MIB = 1024 * 1024
FILEINFO_KEYS = {"path", "size", "mode", "is_dir", "mod_time"}
MOD_TIME_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
OCTAL_RE = r"^[0-7]{3,4}$"

DOCKER_CFG = {
    "providers": {"default": "docker",
                  "docker": {"enabled": True, "default_image": IMAGE, "read_only_rootfs": True}},
    "defaults": {"image": IMAGE},
}

pytestmark = pytest.mark.backend("docker")


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    return r.returncode == 0


def _containers(sid: str) -> list[str]:
    """Every container (running or not) labelled with this sandbox id."""
    out = subprocess.run(["docker", "ps", "-a", "-q", "--no-trunc",
                          "--filter", f"label=stacyvm.sandbox_id={sid}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


# ---------------------------------------------------------------------------------------------
# Fixtures: one docker server per module, one sandbox per SDK kind, one for raw HTTP
# ---------------------------------------------------------------------------------------------
class Spawned:
    """Ids this module created, so teardown can remove whatever a failed test left behind."""

    ids: set[str] = set()


@pytest.fixture(scope="module")
def dsrv(_clean_work_root) -> Iterator[Server]:
    require_backend("docker", _docker_ok(), f"docker daemon with image {IMAGE}")
    srv = Server(DOCKER_CFG, "docker-sdk").start()
    yield srv
    with srv.http(timeout=60) as c:
        for sid in Spawned.ids:
            c.delete(f"/api/v1/sandboxes/{sid}")
    srv.stop()
    for sid in Spawned.ids:
        for cid in _containers(sid):
            subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True)


@pytest.fixture(scope="module")
def dhttp(dsrv) -> Iterator[httpx.Client]:
    with dsrv.http(timeout=60) as c:
        yield c


@pytest.fixture(scope="module", params=["sync", "async"])
def dclient(request, dsrv):
    client = dsrv.sdk(request.param)
    yield client
    client.close()


@pytest.fixture(scope="module")
def dsb(dclient):
    """A long-lived sandbox per SDK kind; tests use distinct paths inside it."""
    sb = dclient.spawn(image=IMAGE)
    Spawned.ids.add(sb.id)
    yield sb
    try:
        sb.destroy()
    except stacyvm.StacyVMError:
        pass


@pytest.fixture(scope="module")
def rsid(dhttp) -> str:
    """A sandbox driven over raw HTTP (files with binary content, wire shapes)."""
    r = dhttp.post("/api/v1/sandboxes", json={"image": IMAGE})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    Spawned.ids.add(sid)
    return sid


def _spawn(client, **kw):
    sb = client.spawn(image=IMAGE, **kw)
    Spawned.ids.add(sb.id)
    return sb


def _exec(http: httpx.Client, sid: str, command: str, **kw) -> dict:
    r = http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": command, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def _stream(http: httpx.Client, sid: str, command: str, **kw) -> list[dict]:
    with http.stream("POST", f"/api/v1/sandboxes/{sid}/exec",
                     json={"command": command, "stream": True, **kw}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in resp.iter_lines() if line.strip()]


def _files(sid: str, suffix: str = "") -> str:
    return f"/api/v1/sandboxes/{sid}/files{suffix}"


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------
def test_lifecycle_spawn_extend_destroy(dclient, dhttp):
    sb = _spawn(dclient, memory_mb=256, ttl="10m", metadata={"suite": "docker"})
    assert re.match(SANDBOX_ID_RE, sb.id), sb.id
    assert (sb.state, sb.provider, sb.image) == ("running", "docker", IMAGE)
    # A real container, labelled ours, running with the requested memory.
    (cid,) = _containers(sb.id)
    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True,
                                     text=True, check=True).stdout)[0]
    assert info["State"]["Running"] is True
    assert info["Config"]["Labels"]["stacyvm.managed"] == "true"
    assert info["HostConfig"]["Memory"] == 256 * MIB
    assert info["HostConfig"]["ReadonlyRootfs"] is True

    got = dclient.get(sb.id)
    assert got.id == sb.id and got.state == "running"
    assert sb.id in {s.id for s in dclient.list()}
    assert ttl_seconds(got._info) == pytest.approx(600, abs=5)
    res = sb.exec("echo hi")
    assert (res.exit_code, res.stdout) == (0, "hi\n")

    sb.extend_ttl("2h")
    after = dclient.get(sb.id)._info
    assert ttl_seconds(after) == pytest.approx(7200, abs=60), after

    stats = dhttp.get(f"/api/v1/sandboxes/{sb.id}/stats").json()
    assert stats["mem_limit_bytes"] == 256 * MIB, stats

    sb.destroy()
    with pytest.raises(stacyvm.SandboxNotFound):
        dclient.get(sb.id)
    assert sb.id not in {s.id for s in dclient.list()}
    assert _containers(sb.id) == [], "container left after destroy"
    sb.destroy()  # idempotent: 200 for an already destroyed sandbox
    with pytest.raises(stacyvm.SandboxNotFound):
        sb.exec("true")


# ---------------------------------------------------------------------------------------------
# Exec through both SDK clients
# ---------------------------------------------------------------------------------------------
def test_exec_exit_codes_and_stderr(dsb):
    res = dsb.exec("echo hello")
    assert (res.exit_code, res.stdout, res.stderr) == (0, "hello\n", "")
    assert re.match(GO_DURATION_RE, res.duration), res.duration
    assert dsb.exec("exit 42").exit_code == 42
    res = dsb.exec("echo out; echo oops >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "oops\n")
    res = dsb.exec("no-such-program-e2e")
    assert res.exit_code == 127 and "not found" in res.stderr, res


def test_exec_env_and_workdir(dsb):
    res = dsb.exec('printf "%s|%s|%s" "$FOO" "$BAR" "$WORKSPACE"',
                   env={"FOO": "bar baz", "BAR": "ünï"})
    assert res.stdout == "bar baz|ünï|/workspace", res
    assert dsb.exec("pwd").stdout == "/workspace\n"
    dsb.write_file("/workspace/wd/marker.txt", "m")
    res = dsb.exec("ls; pwd", workdir="/workspace/wd")
    assert (res.exit_code, res.stdout) == (0, "marker.txt\n/workspace/wd\n"), res


def test_exec_argv_mode(dsb):
    res = dsb.exec("echo", args=["a  b", "$HOME", "*"], mode="argv")
    assert (res.exit_code, res.stdout) == (0, "a  b $HOME *\n"), res
    res = dsb.exec("/bin/sh", args=["-c", "echo $0 $1", "zero", "one"], mode="argv")
    assert res.stdout == "zero one\n", res
    res = dsb.exec("echo", args=["it's", "a;b"])  # shell mode quotes the args
    assert res.stdout == "it's a;b\n", res


def test_exec_timeout_kills_command_not_sandbox(dsb):
    start = time.monotonic()
    with pytest.raises(stacyvm.StacyVMError) as ei:
        dsb.exec("sleep 300 & sleep 301", timeout="1s")
    assert ei.value.code == "TIMEOUT", ei.value
    assert type(ei.value) is stacyvm.StacyVMError  # 408
    assert time.monotonic() - start < 8
    # The command and what it started are gone; the sandbox itself still works.
    deadline = time.monotonic() + 10
    while True:
        ps = dsb.exec("ps -o args").stdout
        if "sleep 30" not in ps:
            break
        assert time.monotonic() < deadline, f"timed-out command survived:\n{ps}"
        time.sleep(0.2)
    res = dsb.exec("echo still alive")
    assert (res.exit_code, res.stdout) == (0, "still alive\n")


def test_exec_timeout_wire(dhttp, rsid, dsrv):
    r = dhttp.post(f"/api/v1/sandboxes/{rsid}/exec", json={"command": "sleep 30", "timeout": "500ms"})
    body = assert_error(r, 408, "TIMEOUT", dsrv)
    assert rsid in body["message"]
    assert _exec(dhttp, rsid, "echo ok")["stdout"] == "ok\n"


def test_exec_stream_sdk(dsb):
    chunks = list(dsb.exec_stream("echo one; echo warn >&2; echo two; exit 3"))
    streams = [c.stream for c in chunks]
    assert set(streams) <= {"stdout", "stderr", "exit"}, streams
    assert streams.count("exit") == 1 and streams[-1] == "exit", streams
    assert chunks[-1].data == ""
    assert "".join(c.data for c in chunks if c.stream == "stdout") == "one\ntwo\n"
    assert "".join(c.data for c in chunks if c.stream == "stderr") == "warn\n"
    chunks = list(dsb.exec_stream("printf %s-%s \"$X\" \"$(pwd)\"", env={"X": "y"},
                                  workdir="/tmp"))
    assert "".join(c.data for c in chunks if c.stream == "stdout") == "y-/tmp"


def test_exec_stream_wire_is_live_and_ends_with_exit_line(dhttp, rsid):
    t0 = time.monotonic()
    first_at = None
    lines = []
    with dhttp.stream("POST", f"/api/v1/sandboxes/{rsid}/exec",
                      json={"command": "echo first; sleep 2; echo second >&2; exit 7",
                            "stream": True}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.strip():
                continue
            if first_at is None:
                first_at = time.monotonic() - t0
            lines.append(json.loads(line))
    total = time.monotonic() - t0
    assert first_at is not None and first_at < total - 1.0, (first_at, total)
    assert lines[0] == {"stream": "stdout", "data": "first\n"}, lines
    last = lines[-1]
    assert (last["stream"], last["data"], last["exit_code"]) == ("exit", "", 7), last
    assert re.match(GO_DURATION_RE, last["duration"]), last
    assert "".join(x["data"] for x in lines if x["stream"] == "stderr") == "second\n"


# ---------------------------------------------------------------------------------------------
# Files: SDK round trips, then binary content and wire shapes over raw HTTP
# ---------------------------------------------------------------------------------------------
def test_files_sdk_roundtrip(dsb):
    base = "/workspace/sdkf"
    dsb.write_file(f"{base}/deep/hello.txt", "hello world")
    assert dsb.read_file(f"{base}/deep/hello.txt") == "hello world"
    st = dsb.stat_file(f"{base}/deep/hello.txt")
    assert (st["size"], st["is_dir"], st["mode"]) == (11, False, "644"), st
    assert dsb.stat_file(f"{base}/deep")["is_dir"] is True
    for name in ("a.log", "b.log", "c.txt"):
        dsb.write_file(f"{base}/{name}", name)
    assert sorted(dsb.glob_files(f"{base}/*.log")) == [f"{base}/a.log", f"{base}/b.log"]
    assert dsb.glob_files(f"{base}/*.none") == []
    dsb.move_file(f"{base}/c.txt", f"{base}/moved/c2.txt")
    assert dsb.read_file(f"{base}/moved/c2.txt") == "c.txt"
    with pytest.raises(stacyvm.SandboxNotFound):  # 404 FILE_NOT_FOUND
        dsb.read_file(f"{base}/c.txt")
    dsb.write_file(f"{base}/run.sh", "#!/bin/sh\necho ran\n")
    assert dsb.exec(f"{base}/run.sh").exit_code != 0
    dsb.chmod_file(f"{base}/run.sh", "0755")
    assert dsb.stat_file(f"{base}/run.sh")["mode"] == "755"
    assert dsb.exec(f"{base}/run.sh").stdout == "ran\n"
    dsb.delete_file(f"{base}/a.log")
    dsb.delete_file(f"{base}/deep", recursive=True)
    assert {i["path"] for i in dsb.list_files(base)} == {
        f"{base}/b.log", f"{base}/moved", f"{base}/run.sh"}


ALL_CODEPOINTS = "".join(chr(i) for i in range(256)) + "日本語 🚀\r\n"


def test_files_text_with_every_byte_value_roundtrips(dhttp, rsid):
    path = "/workspace/bin/u.txt"
    r = dhttp.post(_files(rsid), json={"path": path, "content": ALL_CODEPOINTS})
    assert (r.status_code, r.json()) == (200, {"status": "written"}), r.text
    r = dhttp.get(_files(rsid), params={"path": path})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.content == ALL_CODEPOINTS.encode("utf-8")
    st = dhttp.get(_files(rsid, "/stat"), params={"path": path}).json()
    assert st["size"] == len(ALL_CODEPOINTS.encode("utf-8"))
    # The command sees the same bytes.
    digest = _exec(dhttp, rsid, f"sha256sum {path}")["stdout"].split()[0]
    assert digest == hashlib.sha256(ALL_CODEPOINTS.encode("utf-8")).hexdigest()


def test_files_binary_made_in_sandbox_reads_exactly(dhttp, rsid):
    script = "printf '" + "".join(f"\\{b:03o}" for b in range(256)) + "' > /workspace/all.bin"
    assert _exec(dhttp, rsid, script)["exit_code"] == 0
    r = dhttp.get(_files(rsid), params={"path": "/workspace/all.bin"})
    assert r.content == bytes(range(256))
    # Larger than any single chunk or tar block: 3 MB of random bytes.
    out = _exec(dhttp, rsid, "head -c 3000000 /dev/urandom > /workspace/big.bin && "
                             "sha256sum /workspace/big.bin")
    r = dhttp.get(_files(rsid), params={"path": "/workspace/big.bin"})
    assert len(r.content) == 3_000_000
    assert hashlib.sha256(r.content).hexdigest() == out["stdout"].split()[0]


def test_files_modes_are_octal(dhttp, rsid):
    for path, mode, want in (("/workspace/m/plain.txt", None, "644"),
                             ("/workspace/m/x.sh", "0755", "755"),
                             ("/workspace/m/y.sh", "755", "755"),
                             ("/workspace/m/z.sh", "executable", "755"),
                             ("/workspace/m/p.txt", "0600", "600")):
        body = {"path": path, "content": "#!/bin/sh\necho x\n"}
        if mode:
            body["mode"] = mode
        assert dhttp.post(_files(rsid), json=body).status_code == 200
        st = dhttp.get(_files(rsid, "/stat"), params={"path": path}).json()
        assert st["mode"] == want, (path, mode, st)
    assert _exec(dhttp, rsid, "stat -c %a /workspace/m/x.sh /workspace/m/p.txt")["stdout"] \
        == "755\n600\n"
    r = dhttp.post(_files(rsid, "/chmod"), json={"path": "/workspace/m/plain.txt", "mode": "700"})
    assert (r.status_code, r.json()) == (200, {"status": "chmod applied"})
    st = dhttp.get(_files(rsid, "/stat"), params={"path": "/workspace/m/plain.txt"}).json()
    assert st["mode"] == "700"
    d = dhttp.get(_files(rsid, "/stat"), params={"path": "/workspace/m"}).json()
    assert d["is_dir"] is True and re.match(OCTAL_RE, d["mode"]), d
    assert d["path"] == "/workspace/m"


def test_files_list_shape(dhttp, rsid):
    base = "/workspace/ls"
    dhttp.post(_files(rsid), json={"path": f"{base}/b.txt", "content": "bbb"})
    dhttp.post(_files(rsid), json={"path": f"{base}/a.txt", "content": "a"})
    dhttp.post(_files(rsid), json={"path": f"{base}/sub/c.txt", "content": "c"})
    items = dhttp.get(_files(rsid, "/list"), params={"path": base}).json()
    for item in items:
        assert set(item) == FILEINFO_KEYS, item
        assert re.match(MOD_TIME_RE, item["mod_time"]), item
    # docker: the clean request path joined with the name (leading "/"), octal mode, sorted,
    # first level only.
    assert [i["path"] for i in items] == [f"{base}/a.txt", f"{base}/b.txt", f"{base}/sub"]
    a, b, sub = items
    assert (a["size"], a["is_dir"], a["mode"]) == (1, False, "644")
    assert (b["size"], b["is_dir"]) == (3, False)
    assert (sub["is_dir"], sub["mode"]) == (True, "755")
    # A relative or unclean request path is cleaned the same way.
    rel = dhttp.get(_files(rsid, "/list"), params={"path": "workspace/ls/"}).json()
    assert [i["path"] for i in rel] == [i["path"] for i in items]


def test_files_status_bodies_and_delete(dhttp, rsid, dsrv):
    sid = rsid
    assert dhttp.post(_files(sid), json={"path": "/workspace/d/m.txt", "content": "m"}).json() \
        == {"status": "written"}
    assert dhttp.post(_files(sid, "/move"), json={"old_path": "/workspace/d/m.txt",
                                                  "new_path": "/workspace/d2/n.txt"}).json() \
        == {"status": "moved"}
    assert dhttp.get(_files(sid), params={"path": "/workspace/d2/n.txt"}).content == b"m"
    assert dhttp.delete(_files(sid), params={"path": "/workspace/d2/n.txt"}).json() \
        == {"status": "deleted"}
    assert_error(dhttp.get(_files(sid), params={"path": "/workspace/d2/n.txt"}),
                 404, "FILE_NOT_FOUND", dsrv)
    dhttp.post(_files(sid), json={"path": "/workspace/tree/a/b.txt", "content": "b"})
    r = dhttp.delete(_files(sid), params={"path": "/workspace/tree", "recursive": "true"})
    assert r.status_code == 200, r.text
    assert_error(dhttp.get(_files(sid, "/stat"), params={"path": "/workspace/tree"}),
                 404, "FILE_NOT_FOUND", dsrv)
    r = dhttp.delete(_files(sid), params={"path": "/workspace/none", "recursive": "true"})
    assert (r.status_code, r.json()) == (200, {"status": "deleted"})


@pytest.mark.parametrize("op", ["read", "stat", "list", "delete", "move", "chmod"])
def test_missing_file_is_404_file_not_found(dhttp, rsid, dsrv, op):
    path = "/workspace/does/not/exist.txt"
    if op == "read":
        r = dhttp.get(_files(rsid), params={"path": path})
    elif op == "stat":
        r = dhttp.get(_files(rsid, "/stat"), params={"path": path})
    elif op == "list":
        r = dhttp.get(_files(rsid, "/list"), params={"path": path})
    elif op == "delete":
        r = dhttp.delete(_files(rsid), params={"path": path})
    elif op == "move":
        r = dhttp.post(_files(rsid, "/move"), json={"old_path": path, "new_path": "/workspace/x"})
    else:
        r = dhttp.post(_files(rsid, "/chmod"), json={"path": path, "mode": "755"})
    assert_error(r, 404, "FILE_NOT_FOUND", dsrv)


@pytest.mark.parametrize("op", ["read", "write", "stat", "list", "delete", "move", "chmod", "glob"])
def test_path_escape_is_400(dhttp, rsid, dsrv, op):
    esc = "../../etc/passwd"
    if op == "read":
        r = dhttp.get(_files(rsid), params={"path": esc})
    elif op == "write":
        r = dhttp.post(_files(rsid), json={"path": esc, "content": "pwned"})
    elif op == "stat":
        r = dhttp.get(_files(rsid, "/stat"), params={"path": esc})
    elif op == "list":
        r = dhttp.get(_files(rsid, "/list"), params={"path": "../../etc"})
    elif op == "delete":
        r = dhttp.delete(_files(rsid), params={"path": esc, "recursive": "true"})
    elif op == "move":
        dhttp.post(_files(rsid), json={"path": "/workspace/mv.txt", "content": "x"})
        r = dhttp.post(_files(rsid, "/move"), json={"old_path": "/workspace/mv.txt",
                                                    "new_path": "../../../tmp/escaped.txt"})
    elif op == "chmod":
        r = dhttp.post(_files(rsid, "/chmod"), json={"path": esc, "mode": "777"})
    else:
        r = dhttp.get(_files(rsid, "/glob"), params={"pattern": "../../etc/*"})
    body = assert_error(r, 400, "BAD_REQUEST", dsrv)
    assert "root:" not in body["message"]


# ---------------------------------------------------------------------------------------------
# Logs, stats
# ---------------------------------------------------------------------------------------------
def test_logs_and_stats(dhttp, rsid, dsrv):
    r = dhttp.get(f"/api/v1/sandboxes/{rsid}/logs", params={"lines": 5})
    assert r.status_code == 200, r.text
    # Bare array of strings; docker's console is the keep-alive's (empty) output.
    assert r.json() == [], r.json()
    r = dhttp.get(f"/api/v1/sandboxes/{rsid}/stats")
    assert r.status_code == 200, r.text
    s = r.json()
    assert set(s) == {"supported", "cpu_pct", "mem_bytes", "mem_limit_bytes"}, s
    assert s["supported"] is True
    assert isinstance(s["cpu_pct"], (int, float)) and s["cpu_pct"] >= 0
    assert isinstance(s["mem_bytes"], int) and 0 < s["mem_bytes"] < s["mem_limit_bytes"]
    assert s["mem_limit_bytes"] == 1024 * MIB  # defaults.memory_mb
    assert_error(dhttp.get("/api/v1/sandboxes/sb-0badf11e/stats"), 404, "NOT_FOUND", dsrv)


# ---------------------------------------------------------------------------------------------
# Hardening through the API
# ---------------------------------------------------------------------------------------------
def test_cannot_mount_and_has_no_capabilities(dhttp, rsid):
    res = _exec(dhttp, rsid, "mkdir -p /tmp/mnt && mount -t tmpfs none /tmp/mnt")
    assert res["exit_code"] != 0 and "denied" in res["stderr"], res
    caps = _exec(dhttp, rsid, "grep -E '^Cap(Eff|Bnd)' /proc/self/status")["stdout"]
    assert caps.split() == ["CapEff:", "0" * 16, "CapBnd:", "0" * 16], caps


def test_cannot_see_host_processes(dhttp, rsid):
    out = _exec(dhttp, rsid, "for p in /proc/[0-9]*; do echo \"${p#/proc/} "
                             "$(tr '\\0' ' ' < $p/cmdline)\"; done")["stdout"]
    procs = dict(line.split(" ", 1) for line in out.splitlines())
    assert "docker-init" in procs["1"], procs  # PID 1 is the sandbox's own init
    # The sandbox's process agent runs inside it (it runs this very command): not a host process.
    procs = {p: c for p, c in procs.items() if not c.startswith("/.stacyvm/agent ")}
    assert len(procs) < 10, procs
    joined = " ".join(procs.values())
    for host_proc in ("dockerd", "containerd", "stacyvm", "pytest"):
        assert host_proc not in joined, procs


def test_read_only_rootfs(dhttp, rsid, dsrv):
    for path in ("/etc/x", "/x", "/bin/x", "/root/x"):
        res = _exec(dhttp, rsid, f"echo x > {path}")
        assert res["exit_code"] != 0 and "Read-only file system" in res["stderr"], (path, res)
        r = dhttp.post(_files(rsid), json={"path": path, "content": "x"})
        assert_error(r, 400, "BAD_REQUEST", dsrv)
        assert_error(dhttp.get(_files(rsid, "/stat"), params={"path": path}),
                     404, "FILE_NOT_FOUND", dsrv)
    res = _exec(dhttp, rsid, "echo t > /tmp/t && echo w > /workspace/w && cat /tmp/t /workspace/w")
    assert (res["exit_code"], res["stdout"]) == (0, "t\nw\n"), res
    # Both writable places are reachable through the files API too.
    assert dhttp.get(_files(rsid), params={"path": "/tmp/t"}).content == b"t\n"
    assert dhttp.post(_files(rsid), json={"path": "/tmp/f.txt", "content": "f"}).status_code == 200
    assert _exec(dhttp, rsid, "cat /tmp/f.txt")["stdout"] == "f"


def test_fork_bomb_hits_pids_limit_server_stays_healthy(dsrv, dhttp, rsid):
    r = dhttp.post("/api/v1/sandboxes", json={"image": IMAGE})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    Spawned.ids.add(sid)
    try:
        lines = _stream(dhttp, sid, "f() { f | f & }; f; sleep 60", timeout="3s")
        err = "".join(x["data"] for x in lines if x["stream"] == "stderr")
        assert "can't fork" in err, err[-500:]  # the pids limit, not the host, said no
        last = lines[-1]
        assert last["stream"] == "exit" and "timeout" in last.get("error", ""), last
        assert dhttp.get("/api/v1/health").json()["status"] == "ok"
        # Another sandbox is unaffected, and this one recovers once the bomb is swept.
        assert _exec(dhttp, rsid, "echo other")["stdout"] == "other\n"
        deadline = time.monotonic() + 20
        while True:
            # The sandbox's process agent (which runs the execs) is not part of the bomb.
            res = _exec(dhttp, sid, "ps -o args | grep -v /.stacyvm/agent | wc -l")
            if res["exit_code"] == 0 and int(res["stdout"].strip() or 99) <= 6:
                break
            assert time.monotonic() < deadline, f"fork bomb still running: {res}"
            time.sleep(0.3)
        assert _exec(dhttp, sid, "echo alive")["stdout"] == "alive\n"
    finally:
        assert dhttp.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
    assert _containers(sid) == []


def test_memory_limit_kills_the_command(dsrv, dhttp):
    client = dsrv.sdk("sync")
    try:
        sb = _spawn(client, memory_mb=64)
        stats = dhttp.get(f"/api/v1/sandboxes/{sb.id}/stats").json()
        assert stats["mem_limit_bytes"] == 64 * MIB, stats
        # dd allocates and fills one 100 MiB buffer: the OOM killer ends it (SIGKILL, 137).
        res = sb.exec("dd if=/dev/zero of=/dev/null bs=100M count=1")
        assert res.exit_code == 137, res
        assert dhttp.get("/api/v1/health").json()["status"] == "ok"
        assert client.get(sb.id).state == "running"
        assert sb.exec("echo still here").stdout == "still here\n"
        # Within the limit is fine.
        assert sb.exec("dd if=/dev/zero of=/dev/null bs=16M count=1").exit_code == 0
        sb.destroy()
        assert _containers(sb.id) == []
    finally:
        client.close()
