"""Pause to disk, memory snapshots and fork on the microvm provider through the live server
(issue 12, docs/state.md): a process started before a pause, a snapshot or a fork goes on from
its value in memory in the resumed sandbox and in every copy. Needs `scripts/setup-microvm.sh`
assets (guests run under TCG here: few sandboxes)."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest
from conftest import Server, assert_error, require_backend

IMAGE = "stacyvm-test/busybox:latest"
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.tmp; mv /tmp/c.tmp /tmp/c; sleep 0.2; done"

pytestmark = pytest.mark.backend("qemu")


@pytest.fixture(scope="module")
def http(_clean_work_root) -> Iterator[httpx.Client]:
    srv = Server({
        "providers": {"default": "microvm", "microvm": {"enabled": True}},
        "defaults": {"image": IMAGE, "memory_mb": 256},
    }, "state-microvm").start()
    with srv.http(timeout=180) as c:
        providers = {p["name"]: p for p in c.get("/api/v1/providers").json()}
        vm = providers.get("microvm", {})
        require_backend("qemu", bool(vm.get("healthy")),
                        f"microvm provider unhealthy: {vm.get('error', 'not registered')}")
        yield c
    srv.stop()


def _spawn(http: httpx.Client, **body) -> str:
    r = http.post("/api/v1/sandboxes", json={"image": IMAGE, "ttl": "10m", **body})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _counter(http: httpx.Client, sid: str) -> int:
    r = http.get(f"/api/v1/sandboxes/{sid}/files", params={"path": "/tmp/c"})
    assert r.status_code == 200, r.text
    return int(r.text.strip())


def _counter_reaches(http: httpx.Client, sid: str, n: int) -> int:
    end = time.monotonic() + 60
    while True:
        r = http.get(f"/api/v1/sandboxes/{sid}/files", params={"path": "/tmp/c"})
        c = int(r.text.strip()) if r.status_code == 200 and r.text.strip() else 0
        if c >= n:
            return c
        assert time.monotonic() < end, f"counter of {sid} stayed at {c}, wanted {n}"
        time.sleep(0.2)


def test_pause_snapshot_and_fork_keep_a_running_process(http: httpx.Client) -> None:
    caps = {p["name"]: p for p in http.get("/api/v1/providers").json()}["microvm"]["capabilities"]
    assert "pause" in caps and "snapshots" in caps, caps
    src = _spawn(http)
    r = http.post(f"/api/v1/sandboxes/{src}/processes", json={"command": COUNTER})
    assert r.status_code == 201, r.text
    pid = r.json()["pid"]
    _counter_reaches(http, src, 3)

    r = http.post(f"/api/v1/sandboxes/{src}/pause")
    assert r.status_code == 200 and r.json()["state"] == "paused", r.text
    assert_error(http.post(f"/api/v1/sandboxes/{src}/exec", json={"command": "true"}), 409,
                 "SANDBOX_PAUSED")
    r = http.post(f"/api/v1/sandboxes/{src}/resume")
    assert r.status_code == 200 and r.json()["state"] == "running", r.text
    at_resume = _counter(http, src)
    assert at_resume >= 3, at_resume
    _counter_reaches(http, src, at_resume + 2)
    p = http.get(f"/api/v1/sandboxes/{src}/processes/{pid}").json()
    assert p["state"] == "running", p

    before_snap = _counter(http, src)
    r = http.post(f"/api/v1/sandboxes/{src}/snapshots", json={"name": "e2e"})
    assert r.status_code == 201, r.text
    snap = r.json()
    assert (snap["kind"], snap["sandbox_id"], snap["provider"]) == ("memory", src, "microvm")
    restored = _spawn(http, snapshot=snap["id"])
    first = _counter(http, restored)
    assert first >= before_snap, f"the restored counter started over: {first} < {before_snap}"
    _counter_reaches(http, restored, first + 2)

    before_fork = _counter(http, src)
    r = http.post(f"/api/v1/sandboxes/{src}/fork", json={"count": 3})
    assert r.status_code == 201, r.text
    forks = [s["id"] for s in r.json()]
    assert len(set(forks)) == 3
    for f in forks:
        n = _counter(http, f)
        assert n >= before_fork, f"fork {f} counter started over: {n} < {before_fork}"
        _counter_reaches(http, f, n + 2)
        r = http.post(f"/api/v1/sandboxes/{f}/exec", json={"command": "hostname"})
        assert r.json()["stdout"].strip() == f, r.text
    # The fork's own snapshot is gone; ours stays until deleted.
    ids = [s["id"] for s in http.get("/api/v1/snapshots").json()]
    assert ids == [snap["id"]], ids
    for s in [src, restored, *forks]:
        assert http.delete(f"/api/v1/sandboxes/{s}").status_code == 200
    assert http.delete(f"/api/v1/snapshots/{snap['id']}").status_code == 200
    assert_error(http.post("/api/v1/sandboxes", json={"snapshot": snap["id"]}), 404,
                 "SNAPSHOT_NOT_FOUND")
