"""Large files through the worker path: a 100 MiB streamed upload (`PUT …/files`) to a sandbox
on a real `stacyvm worker`, read back streamed, byte-exact (sha256), while the peak RSS of both
the control plane and the worker stays far below the file size (no buffering anywhere).
Control plane + one worker on loopback, mock provider."""

from __future__ import annotations

import hashlib
import random
import time

import pytest

from test_remote_faults import TOKEN, Worker

MIB = 1 << 20
FILE_MIB = 100
PIECE = MIB
# Buffering the file once in either process would add >= 100 MiB; streaming adds a few chunks
# plus allocator and connection noise (measured: a few MiB). 32 MiB separates the two without
# being sensitive to that noise.
MAX_RSS_GROWTH_MIB = 32


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Resets VmHWM to the current RSS (Linux clear_refs `5`); returns that RSS in KiB."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return status_kib(pid, "VmRSS")


def pieces(seed: int, digest):
    """FILE_MIB MiB of deterministic noise, one MiB at a time (never all in memory)."""
    rng = random.Random(seed)
    for _ in range(FILE_MIB):
        chunk = rng.randbytes(PIECE)
        digest.update(chunk)
        yield chunk


@pytest.fixture
def cluster(server_factory):
    cp = server_factory({"auth": {"worker_token": TOKEN}}, name="remote-files")
    w = Worker(cp).start()
    with cp.http() as c:
        # Placement must pick the worker, not the control plane's own `local`.
        assert c.delete("/api/v1/admin/workers/local").status_code == 200
    yield cp, w
    w.stop()


def spawn_remote(c) -> str:
    r = c.post("/api/v1/sandboxes", json={"image": "alpine", "provider": "mock", "ttl": "10m"})
    assert r.status_code == 201, r.text
    assert r.json()["worker_id"] == "worker-a", r.text
    return r.json()["id"]


@pytest.mark.timeout(600)
def test_100_mib_round_trip_through_worker_with_bounded_memory(cluster):
    cp, w = cluster
    with cp.http(timeout=300) as c:
        sid = spawn_remote(c)
        url = f"/api/v1/sandboxes/{sid}/files"
        pids = {"control plane": cp.proc.pid, "worker": w.proc.pid}
        base = {name: reset_peak(pid) for name, pid in pids.items()}

        sent = hashlib.sha256()
        r = c.put(url, params={"path": "/workspace/big.bin", "mode": "0644"},
                  headers={"Content-Type": "application/octet-stream"},
                  content=pieces(42, sent))
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "written", "size": FILE_MIB * MIB}

        got = hashlib.sha256()
        n = 0
        with c.stream("GET", url, params={"path": "/workspace/big.bin"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/octet-stream"
            assert resp.headers["content-length"] == str(FILE_MIB * MIB)
            for chunk in resp.iter_raw():
                got.update(chunk)
                n += len(chunk)
        assert n == FILE_MIB * MIB
        assert got.hexdigest() == sent.hexdigest()

        growth = {name: (status_kib(pid, "VmHWM") - base[name]) / 1024
                  for name, pid in pids.items()}
        print(f"\npeak RSS growth over a {FILE_MIB} MiB upload + download: "
              + ", ".join(f"{k} {v:.1f} MiB" for k, v in growth.items()))
        for name, mib in growth.items():
            assert mib < MAX_RSS_GROWTH_MIB, f"{name} peak RSS grew {mib:.1f} MiB: {growth}"

        st = c.get(f"{url}/stat", params={"path": "/workspace/big.bin"}).json()
        assert st["size"] == FILE_MIB * MIB, st


def test_streamed_routes_on_a_remote_sandbox_keep_errors_and_the_json_api(cluster):
    cp, _ = cluster
    with cp.http() as c:
        sid = spawn_remote(c)
        url = f"/api/v1/sandboxes/{sid}/files"
        raw = bytes(range(256)) * 3
        r = c.put(url, params={"path": "/workspace/bytes.bin", "mode": "executable"},
                  content=raw)
        assert r.status_code == 200, r.text
        r = c.get(url, params={"path": "/workspace/bytes.bin"})
        assert r.content == raw
        assert c.get(f"{url}/stat", params={"path": "/workspace/bytes.bin"}).json()["mode"] == "755"

        r = c.put(url, params={"path": "../../etc/escape"}, content=b"x")
        assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST", r.text
        r = c.get(url, params={"path": "../../etc/passwd"})
        assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST", r.text
        r = c.get(url, params={"path": "/workspace/missing"})
        assert r.status_code == 404 and r.json()["code"] == "FILE_NOT_FOUND", r.text
        assert "/workspace/missing" in r.json()["message"]
        r = c.put("/api/v1/sandboxes/sb-00000000/files", params={"path": "/x"}, content=b"x")
        assert r.status_code == 404, r.text

        # An upload that dies half way leaves neither the file nor a temporary one behind.
        def dying():
            yield b"x" * MIB
            yield b"y" * MIB
            raise RuntimeError("client gave up")

        with pytest.raises(RuntimeError):
            c.put(url, params={"path": "/workspace/partial.bin"}, content=dying())
        def leftovers():
            names = [f["path"] for f in c.get(f"{url}/list", params={"path": "/workspace"}).json()]
            return [n for n in names if "partial" in n or "stacyvm-upload" in n]
        deadline = time.monotonic() + 10
        while leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert leftovers() == []
        r = c.get(url, params={"path": "/workspace/partial.bin"})
        assert r.status_code == 404 and r.json()["code"] == "FILE_NOT_FOUND", r.text

    # The official SDK's JSON write and raw read still work on a remote sandbox.
    client = cp.sync_client()
    sb = client.get(sid)
    sb.write_file("/workspace/hello.txt", "hello remote")
    assert sb.read_file("/workspace/hello.txt") == "hello remote"
