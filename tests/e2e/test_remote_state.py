"""Volumes and snapshots on a remote worker (issue 12, docs/state.md): they live with the worker
that made them (recorded as its `worker_id`), spawns that need them are placed there, and a
worker that goes silent makes them unavailable (409 WORKER_UNAVAILABLE), not lost, until it
answers again. Control plane + one real `stacyvm worker` on loopback, mock provider."""

from __future__ import annotations

import subprocess
import threading

import httpx
import pytest

from conftest import assert_error, require_backend
from test_remote_faults import TOKEN, Worker, wait_for
from test_state_crash import MANY_FILES


def _spawn(c: httpx.Client, **body) -> dict:
    r = c.post("/api/v1/sandboxes", json={"image": "alpine", "provider": "mock", "ttl": "10m",
                                          **body})
    assert r.status_code == 201, r.text
    return r.json()


def _sh(c: httpx.Client, sid: str, cmd: str) -> dict:
    r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": cmd})
    assert r.status_code == 200, r.text
    return r.json()


def _stale(c: httpx.Client, wid: str) -> bool:
    r = c.get(f"/api/v1/workers/{wid}")
    return r.status_code == 200 and r.json()["stale"]


def test_volumes_and_snapshots_live_on_their_worker(server_factory):
    cp = server_factory({
        "auth": {"worker_token": TOKEN},
        "server": {"reconcile_interval": "500ms"},
        "worker": {"stale_after_intervals": 3},
    }, name="remote-state")
    w = Worker(cp).start()
    try:
        with cp.http(timeout=60) as c:
            # With `local` eligible a volume goes there unless a worker is named.
            r = c.post("/api/v1/volumes", json={"name": "on-local", "provider": "mock"})
            assert r.status_code == 201 and r.json()["worker_id"] == "local", r.text
            r = c.post("/api/v1/volumes", json={"name": "rv", "provider": "mock",
                                                "worker_id": "worker-a"})
            assert r.status_code == 201, r.text
            assert r.json()["worker_id"] == "worker-a"
            assert_error(c.post("/api/v1/volumes", json={"name": "x", "provider": "mock",
                                                         "worker_id": "worker-nope"}),
                         409, "WORKER_UNAVAILABLE")
            # A spawn mounting it is placed on worker-a, although `local` is preferred.
            sb = _spawn(c, volumes=[{"name": "rv", "mount_path": "/workspace/vol"}])
            assert sb["worker_id"] == "worker-a", sb
            assert _sh(c, sb["id"], "echo kept > vol/f.txt")["exit_code"] == 0
            # Volumes on two workers cannot meet in one sandbox.
            assert_error(c.post("/api/v1/sandboxes", json={
                "image": "alpine", "provider": "mock",
                "volumes": [{"name": "rv", "mount_path": "/workspace/a"},
                            {"name": "on-local", "mount_path": "/workspace/b"}]}),
                409, "CONFLICT")
            assert c.delete(f"/api/v1/sandboxes/{sb['id']}").status_code == 200

            # Snapshots of a remote sandbox live on its worker; spawns from them go there.
            assert c.delete("/api/v1/admin/workers/local").status_code == 200
            src = _spawn(c)
            assert src["worker_id"] == "worker-a"
            _sh(c, src["id"], "echo snap > s.txt")
            r = c.post(f"/api/v1/sandboxes/{src['id']}/snapshots", json={"name": "remote"})
            assert r.status_code == 201, r.text
            snap = r.json()
            assert (snap["worker_id"], snap["kind"]) == ("worker-a", "filesystem"), snap
            _sh(c, src["id"], "echo later > s.txt")
            restored = _spawn(c, snapshot=snap["id"])
            assert restored["worker_id"] == "worker-a"
            assert _sh(c, restored["id"], "cat s.txt")["stdout"] == "snap\n"
            r = c.post(f"/api/v1/sandboxes/{src['id']}/fork", json={"count": 2})
            assert r.status_code == 201, r.text
            copies = r.json()
            assert [x["worker_id"] for x in copies] == ["worker-a", "worker-a"]
            for x in copies:
                assert _sh(c, x["id"], "cat s.txt")["stdout"] == "later\n"
                c.delete(f"/api/v1/sandboxes/{x['id']}")

            # A silent worker: its volume and snapshot are unavailable, still recorded.
            w.freeze()
            wait_for(lambda: _stale(c, "worker-a"), 30, "worker-a to go stale")
            assert_error(c.post("/api/v1/sandboxes", json={
                "image": "alpine", "provider": "mock",
                "volumes": [{"name": "rv", "mount_path": "/workspace/vol"}]}),
                409, "WORKER_UNAVAILABLE")
            assert_error(c.post("/api/v1/sandboxes", json={"snapshot": snap["id"]}),
                         409, "WORKER_UNAVAILABLE")
            assert c.get("/api/v1/volumes/rv").json()["worker_id"] == "worker-a"
            assert c.get(f"/api/v1/snapshots/{snap['id']}").status_code == 200
            w.thaw()
            wait_for(lambda: w.registered(), 30, "worker-a to answer again")
            # Back: the volume's data is still there.
            again = _spawn(c, volumes=[{"name": "rv", "mount_path": "/workspace/vol",
                                        "read_only": True}])
            assert _sh(c, again["id"], "cat vol/f.txt")["stdout"] == "kept\n"
            for s in (again, restored, src):
                assert c.delete(f"/api/v1/sandboxes/{s['id']}").status_code == 200
            assert c.delete(f"/api/v1/snapshots/{snap['id']}").status_code == 200
            assert c.delete("/api/v1/volumes/rv").status_code == 200
            # The worker's data went with the records: a volume of the same name starts empty.
            r = c.post("/api/v1/volumes", json={"name": "rv", "provider": "mock",
                                                "worker_id": "worker-a"})
            assert r.status_code == 201, r.text
            fresh = _spawn(c, volumes=[{"name": "rv", "mount_path": "/workspace/vol"}])
            assert _sh(c, fresh["id"], "ls vol | wc -l")["stdout"].strip() == "0"
    finally:
        w.stop()


IMAGE = "stacyvm-test/busybox:latest"


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout


def _docker_cluster(server_factory, name: str, wid: str) -> tuple:
    """A control plane and one worker `wid`, both on docker (fails without it under CI), with a
    2 s snapshot grace so sweeps run within a test."""
    docker_ok = subprocess.run(["docker", "image", "inspect", IMAGE],
                               capture_output=True).returncode == 0
    require_backend("docker", docker_ok, f"docker daemon with image {IMAGE}")
    docker = {"default": "docker", "docker": {"enabled": True, "default_image": IMAGE}}
    cp = server_factory({
        "auth": {"worker_token": TOKEN},
        "server": {"reconcile_interval": "500ms"},
        "worker": {"stale_after_intervals": 3},
        "providers": docker,
        "lifecycle": {"snapshot_grace": "2s"},
    }, name=name)
    return cp, Worker(cp, wid=wid, config_extra={"providers": docker}).start()


@pytest.mark.backend("docker")
@pytest.mark.timeout(180)  # waits for the control plane's 60 s pass
def test_worker_killed_mid_snapshot_leaves_nothing_once_it_returns(server_factory):
    """kill -9 of a docker worker while it takes a snapshot: no record is written, and once
    the worker is back the control plane's sweep (`worker.snapshot_sweep`) removes the
    temporary image and the helper container it left; the sandbox runs on."""
    cp, w = _docker_cluster(server_factory, "remote-state-crash", "worker-a")
    try:
        with cp.http(timeout=120) as c:
            assert c.delete("/api/v1/admin/workers/local").status_code == 200
            sb = _spawn(c, image=IMAGE, provider="docker")
            assert sb["worker_id"] == "worker-a", sb
            sid = sb["id"]
            # Enough that the copy takes a while (see test_state_crash.MANY_FILES).
            assert _sh(c, sid, MANY_FILES)["stdout"] == "ok\n"
            answer: dict = {}

            def snap() -> None:
                try:
                    answer["r"] = cp.http(timeout=120).post(
                        f"/api/v1/sandboxes/{sid}/snapshots", json={})
                except Exception as e:  # noqa: BLE001 - only recorded
                    answer["e"] = repr(e)

            t = threading.Thread(target=snap, daemon=True)
            t.start()

            def tmp_tags() -> list[str]:
                out = _docker("images", "--filter", f"label=stacyvm.sandbox_id={sid}",
                              "--format", "{{.Repository}}:{{.Tag}}")
                return [x for x in out.split() if x.startswith("stacyvm-snap:tmp-")]

            def workspaces() -> list[str]:
                return _docker("volume", "ls", "-q", "--filter", "label=stacyvm.snapshot",
                               "--filter", "label=stacyvm.cluster=worker:worker-a").split()

            wait_for(lambda: tmp_tags() or workspaces() or "r" in answer, 60,
                     "the snapshot to start")
            assert "r" not in answer, f"the snapshot finished before the kill: {answer}"
            w.kill9()
            t.join(timeout=30)
            made = [t.split(":tmp-", 1)[1] for t in tmp_tags()] + [
                v.removeprefix("stacyvm-snapws-") for v in workspaces()]
            assert made, "nothing of the snapshot existed at the kill"
            snap_id = made[0]
            assert "r" in answer and answer["r"].status_code >= 400, answer
            assert c.get("/api/v1/snapshots").json() == [], "a snapshot was recorded"
            w.start()
            wait_for(lambda: c.get(f"/api/v1/sandboxes/{sid}").json()["state"] == "running",
                     30, "the sandbox to run again")

            def helpers() -> str:
                return _docker("ps", "-a", "-q", "--filter",
                               f"label=stacyvm.snapshot-helper={snap_id}")

            # The control plane's periodic pass (every 60 s) asks the worker to sweep.
            wait_for(lambda: not tmp_tags() and not helpers().strip() and not workspaces(), 100,
                     f"the sweep of {tmp_tags()}, helper {helpers()}, {workspaces()}")
            assert _sh(c, sid, "ls big")["stdout"] == "big\n"
            assert c.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
    finally:
        w.stop()


@pytest.mark.backend("docker")
@pytest.mark.timeout(180)
def test_worker_killed_mid_fork_leaves_no_orphan_once_it_returns(server_factory):
    """kill -9 of a docker worker while a fork of 4 spawns its copies there: the fork fails,
    no snapshot stays recorded, and once the worker is back every container of its sandboxes
    has a live record and every live record its container. (The sweep of the fork's snapshot
    data on the worker is the mid-snapshot test's and `docker_provider`'s.)"""
    cp, w = _docker_cluster(server_factory, "remote-fork-crash", "worker-f")

    def containers() -> set[str]:
        out = _docker("ps", "-a", "--filter", "label=stacyvm.managed=true",
                      "--filter", "label=stacyvm.cluster=worker:worker-f",
                      "--format", '{{.Label "stacyvm.sandbox_id"}}')
        return set(out.split())

    try:
        with cp.http(timeout=120) as c:
            assert c.delete("/api/v1/admin/workers/local").status_code == 200
            src = _spawn(c, image=IMAGE, provider="docker")["id"]
            _sh(c, src, "echo forked > f.txt")
            answer: dict = {}

            def fork() -> None:
                try:
                    answer["r"] = cp.http(timeout=120).post(
                        f"/api/v1/sandboxes/{src}/fork", json={"count": 4})
                except Exception as e:  # noqa: BLE001 - only recorded
                    answer["e"] = repr(e)

            t = threading.Thread(target=fork, daemon=True)
            t.start()
            wait_for(lambda: len(containers()) >= 2 or "r" in answer, 90, "the first copy")
            assert "r" not in answer, f"the fork finished before the kill: {answer}"
            w.kill9()
            t.join(timeout=60)
            assert len(containers()) >= 2, "no copy existed at the kill"
            assert "r" in answer and answer["r"].status_code >= 400, answer
            w.start()

            def agree() -> bool:
                live = {s["id"] for s in c.get("/api/v1/sandboxes").json()
                        if s["state"] in ("running", "paused")}
                return live == containers()

            wait_for(agree, 60, "records and containers to agree after the worker returned")
            assert c.get(f"/api/v1/sandboxes/{src}").json()["state"] == "running"
            assert _sh(c, src, "cat f.txt")["stdout"] == "forked\n"
            assert c.get("/api/v1/snapshots").json() == []
            assert c.delete(f"/api/v1/sandboxes/{src}").status_code == 200
            wait_for(lambda: not containers(), 30, "the source's container to go")
    finally:
        w.stop()
        left = containers()
        if left:
            subprocess.run(["docker", "rm", "-f", "-v", *left], capture_output=True)
