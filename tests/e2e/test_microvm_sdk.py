"""The SDK end-to-end suite on the microvm provider (docs/microvm.md): each sandbox is a QEMU
guest with its own kernel (TCG here, so few sandboxes): lifecycle, exec, streaming, files,
logs, timeout, and isolation seen through the API. Needs `scripts/setup-microvm.sh` assets."""

from __future__ import annotations

import json
import platform
import re
from typing import Iterator

import httpx
import pytest
import stacyvm
from conftest import SANDBOX_ID_RE, Server, assert_error, require_backend

IMAGE = "stacyvm-test/busybox:latest"
MICROVM_CFG = {
    "providers": {"default": "microvm", "microvm": {"enabled": True}},
    "defaults": {"image": IMAGE, "memory_mb": 256},
}

pytestmark = pytest.mark.backend("qemu")


@pytest.fixture(scope="module")
def msrv(_clean_work_root) -> Iterator[Server]:
    srv = Server(MICROVM_CFG, "microvm-sdk").start()
    with srv.http() as c:
        providers = {p["name"]: p for p in c.get("/api/v1/providers").json()}
    vm = providers.get("microvm", {})
    require_backend("qemu", bool(vm.get("healthy")),
                    f"microvm provider unhealthy: {vm.get('error', 'not registered')}")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mhttp(msrv) -> Iterator[httpx.Client]:
    with msrv.http(timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def vm(mhttp) -> Iterator[str]:
    """One guest shared by the module's raw-HTTP tests (boots are slow under TCG)."""
    r = mhttp.post("/api/v1/sandboxes", json={"image": IMAGE, "memory_mb": 256, "ttl": "10m"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    yield sid
    mhttp.delete(f"/api/v1/sandboxes/{sid}")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sdk_lifecycle_and_exec(msrv, kind):
    client = msrv.sdk(kind)
    try:
        sb = client.spawn(image=IMAGE, memory_mb=256, ttl="5m")
        try:
            assert re.match(SANDBOX_ID_RE, sb.id)
            assert sb.provider == "microvm"
            assert client.get(sb.id).id == sb.id
            r = sb.exec("echo out; echo err >&2; exit 42")
            assert (r.exit_code, r.stdout, r.stderr) == (42, "out\n", "err\n")
            chunks = list(sb.exec_stream("echo one; echo two"))
            assert "".join(c.data for c in chunks if c.stream == "stdout") == "one\ntwo\n"
            sb.write_file("/workspace/hello.txt", "hello vm")
            assert sb.read_file("/workspace/hello.txt") == "hello vm"
        finally:
            sb.destroy()
        with pytest.raises(stacyvm.SandboxNotFound):
            client.get(sb.id)
    finally:
        client.close()


def test_own_kernel_not_host(mhttp, vm):
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/exec", json={"command": "uname -r"})
    assert r.status_code == 200, r.text
    guest = r.json()["stdout"].strip()
    assert guest and guest != platform.release(), (guest, platform.release())


def test_guest_cannot_read_host_files(mhttp, vm, msrv):
    marker = msrv.dir / "host-secret.txt"
    marker.write_text("host-only-secret")
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/exec",
                   json={"command": f"cat {marker} 2>&1; ls {msrv.dir} 2>&1"})
    assert "host-only-secret" not in r.json()["stdout"], r.text
    assert_error(mhttp.get(f"/api/v1/sandboxes/{vm}/files", params={"path": str(marker)}),
                 404, "FILE_NOT_FOUND")


def test_argv_env_workdir(mhttp, vm):
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/exec",
                   json={"command": "sh", "args": ["-c", "echo \"$FOO $(pwd)\""], "mode": "argv",
                         "env": {"FOO": "bar"}, "workdir": "/tmp"})
    assert r.status_code == 200 and r.json()["stdout"] == "bar /tmp\n", r.text


def test_stream_ends_with_exit_line(mhttp, vm):
    with mhttp.stream("POST", f"/api/v1/sandboxes/{vm}/exec",
                      json={"command": "echo a; exit 3", "stream": True}) as r:
        lines = [json.loads(l) for l in r.iter_lines() if l.strip()]
    assert lines[-1]["stream"] == "exit" and lines[-1]["exit_code"] == 3, lines
    assert "".join(l["data"] for l in lines if l["stream"] == "stdout") == "a\n"


def test_binary_file_round_trip_and_ops(mhttp, vm):
    # The write API takes text; binary content goes in through exec and comes back raw.
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/files",
                   json={"path": "/workspace/d/e/x.txt", "content": "ünïcode ✓"})
    assert r.status_code == 200, r.text
    got = mhttp.get(f"/api/v1/sandboxes/{vm}/files", params={"path": "/workspace/d/e/x.txt"})
    assert got.content == "ünïcode ✓".encode()
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/exec",
                   json={"command": "head -c 20480 /dev/urandom > /workspace/rand.bin; wc -c < /workspace/rand.bin"})
    assert r.json()["stdout"].strip() == "20480", r.text
    raw = mhttp.get(f"/api/v1/sandboxes/{vm}/files", params={"path": "/workspace/rand.bin"})
    assert raw.status_code == 200 and len(raw.content) == 20480
    st = mhttp.get(f"/api/v1/sandboxes/{vm}/files/stat", params={"path": "/workspace/rand.bin"}).json()
    assert st["size"] == 20480 and st["is_dir"] is False
    assert mhttp.post(f"/api/v1/sandboxes/{vm}/files/move",
                      json={"old_path": "/workspace/rand.bin", "new_path": "/workspace/moved.bin"}).status_code == 200
    assert "/workspace/moved.bin" in mhttp.get(f"/api/v1/sandboxes/{vm}/files/glob",
                                                params={"pattern": "/workspace/*.bin"}).json()
    assert mhttp.delete(f"/api/v1/sandboxes/{vm}/files",
                        params={"path": "/workspace/d", "recursive": "true"}).status_code == 200
    assert_error(mhttp.get(f"/api/v1/sandboxes/{vm}/files", params={"path": "/workspace/d/e/x.txt"}),
                 404, "FILE_NOT_FOUND")


def test_timeout_then_still_usable(mhttp, vm):
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/exec", json={"command": "sleep 30", "timeout": "1s"})
    assert_error(r, 408, "TIMEOUT")
    r = mhttp.post(f"/api/v1/sandboxes/{vm}/exec", json={"command": "echo alive"})
    assert r.json()["stdout"] == "alive\n", r.text


def test_logs(mhttp, vm):
    r = mhttp.get(f"/api/v1/sandboxes/{vm}/logs", params={"lines": 20})
    assert r.status_code == 200 and isinstance(r.json(), list), r.text
