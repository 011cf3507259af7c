"""Volumes and snapshots on a remote worker (issue 12, docs/state.md): they live with the worker
that made them (recorded as its `worker_id`), spawns that need them are placed there, and a
worker that goes silent makes them unavailable (409 WORKER_UNAVAILABLE), not lost, until it
answers again. Control plane + one real `stacyvm worker` on loopback, mock provider."""

from __future__ import annotations

import httpx

from conftest import assert_error
from test_remote_faults import TOKEN, Worker, wait_for


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
