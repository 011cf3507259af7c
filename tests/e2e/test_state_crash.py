"""kill -9 of the control plane in the middle of a snapshot, a fork or a pause, on the docker
provider (issue 12, docs/state.md "Crash safety"): after a restart on the same database there
is no half-made snapshot (no `tmp-` image tag, no helper container), no container without a
live record, no record pointing at nothing, and the sandboxes still work. Each test first
checks that the kill really landed mid-operation, so it cannot pass on a crash that missed."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from conftest import Server, require_backend
from test_crash_recovery import (DOCKER_IMAGE, _cluster_containers, _cluster_id, _docker_ok,
                                 _kill9, _remove_cluster_containers)
from test_remote_faults import wait_for

pytestmark = pytest.mark.backend("docker")

CFG = {
    "providers": {"default": "docker", "docker": {"enabled": True, "default_image": DOCKER_IMAGE}},
    "defaults": {"image": DOCKER_IMAGE},
    "server": {"reconcile_interval": "500ms"},
    # Short, so the sweep of what the crash left runs within the test.
    "lifecycle": {"snapshot_grace": "2s"},
}


# Data whose workspace copy takes seconds, not a fraction of one (zeros are quick to write).
MANY_FILES = ("dd if=/dev/zero of=big bs=1M count=600 2>/dev/null && mkdir many && cd many && "
              "i=0 && while [ $i -lt 20000 ]; do : > f$i; i=$((i+1)); done && echo ok")


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout


def _snap_tags(cluster: str) -> list[str]:
    out = _docker("images", "--filter", "label=stacyvm.snapshot",
                  "--filter", f"label=stacyvm.cluster={cluster}",
                  "--format", "{{.Repository}}:{{.Tag}}")
    return [t for t in out.split() if t.startswith("stacyvm-snap:")]


def _helpers(cluster: str) -> list[str]:
    out = _docker("ps", "-a", "--filter", "label=stacyvm.snapshot-helper",
                  "--filter", f"label=stacyvm.cluster={cluster}", "--format",
                  '{{.Names}} {{.Label "stacyvm.snapshot-helper"}}')
    return [line.split()[0] for line in out.splitlines() if len(line.split()) == 2]


def _ws_volumes(cluster: str) -> list[str]:
    """Workspaces of snapshots in the making or made (docker/host_copy.rs)."""
    out = _docker("volume", "ls", "--filter", "label=stacyvm.snapshot",
                  "--filter", f"label=stacyvm.cluster={cluster}", "--format", "{{.Name}}")
    return out.split()


def _start(server_factory, name: str) -> tuple[Server, str]:
    require_backend("docker", _docker_ok(), f"docker daemon with image {DOCKER_IMAGE}")
    srv = server_factory(CFG, name=name)
    return srv, _cluster_id(srv)


def _cleanup(cluster: str) -> None:
    _remove_cluster_containers(cluster)
    helpers = _helpers(cluster)
    if helpers:
        _docker("rm", "-f", *helpers)
    for t in _snap_tags(cluster):
        _docker("rmi", "-f", t)
    for v in _ws_volumes(cluster):
        _docker("volume", "rm", "-f", v)


def _in_background(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["resp"] = fn()
        except Exception as e:  # the server dies under it: expected
            out["error"] = repr(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _records_match_docker(c, cluster: str) -> None:
    """Every live record has its container, every container of ours a live record, every
    snapshot record its image."""
    live = {s["id"] for s in c.get("/api/v1/sandboxes").json()
            if s["state"] in ("running", "paused")}
    containers = set(_cluster_containers(cluster).values())
    assert live <= containers, f"records without a container: {live - containers}"
    assert containers <= live, f"containers without a live record: {containers - live}"
    tags = set(_snap_tags(cluster))
    for snap in c.get("/api/v1/snapshots").json():
        assert f"stacyvm-snap:{snap['id']}" in tags, f"snapshot record without its image: {snap}"


def test_kill9_mid_snapshot_leaves_no_half_made_snapshot(server_factory):
    srv, cluster = _start(server_factory, "crash-snapshot")
    try:
        with srv.http(timeout=120) as c:
            sid = c.post("/api/v1/sandboxes", json={"ttl": "10m"}).json()["id"]
            # Enough that the workspace copy takes a while: 600 MB, and 20,000 small files (each
            # costs the copy its own syscalls; with the zeros alone a snapshot once finished
            # between two polls, in CI).
            r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": MANY_FILES})
            assert r.json()["stdout"] == "ok\n", r.text
            t, out = _in_background(lambda: srv.http(timeout=120).post(
                f"/api/v1/sandboxes/{sid}/snapshots", json={}))
            # Kill once the snapshot is visibly in the making (its workspace volume, temporary
            # tag or helper).
            wait_for(lambda: _ws_volumes(cluster) or any(":tmp-" in x for x in _snap_tags(cluster))
                  or _helpers(cluster) or "resp" in out, 60, "the snapshot to start")
            assert "resp" not in out, f"the snapshot finished before the kill: {out}"
            _kill9(srv)
            t.join(timeout=10)
            half = ([x for x in _snap_tags(cluster) if ":tmp-" in x] + _helpers(cluster)
                    + _ws_volumes(cluster))
            assert half, "nothing half-made was there to clean up: the kill missed"
        srv.start()
        with srv.http(timeout=60) as c:
            assert c.get("/api/v1/snapshots").json() == [], "a half-made snapshot was recorded"
            wait_for(lambda: not _snap_tags(cluster) and not _helpers(cluster)
                  and not _ws_volumes(cluster), 30,
                  f"the sweep of {_snap_tags(cluster)} {_helpers(cluster)} {_ws_volumes(cluster)}")
            # The sandbox is untouched and can be snapshotted now.
            r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "ls -s big"})
            assert r.status_code == 200 and "big" in r.json()["stdout"], r.text
            r = c.post(f"/api/v1/sandboxes/{sid}/snapshots", json={})
            assert r.status_code == 201, r.text
            _records_match_docker(c, cluster)
    finally:
        _cleanup(cluster)


def test_kill9_mid_fork_leaves_no_orphan(server_factory):
    srv, cluster = _start(server_factory, "crash-fork")
    try:
        with srv.http(timeout=120) as c:
            src = c.post("/api/v1/sandboxes", json={"ttl": "10m"}).json()["id"]
            c.post(f"/api/v1/sandboxes/{src}/exec", json={"command": "echo forked > f.txt"})
            t, out = _in_background(lambda: srv.http(timeout=120).post(
                f"/api/v1/sandboxes/{src}/fork", json={"count": 4}))
            # Kill once the first copy's container exists: the fork is between its spawns.
            wait_for(lambda: len(_cluster_containers(cluster)) >= 2 or "resp" in out, 90,
                  "the fork's first copy")
            assert "resp" not in out, f"the fork finished before the kill: {out}"
            _kill9(srv)
            t.join(timeout=10)
            assert len(_cluster_containers(cluster)) >= 2, "no copy existed at the kill"
        srv.start()
        with srv.http(timeout=60) as c:
            def settled() -> bool:
                try:
                    _records_match_docker(c, cluster)
                    return True
                except AssertionError:
                    return False
            wait_for(settled, 30, "records and containers to agree")
            _records_match_docker(c, cluster)
            listed = {s["id"]: s["state"] for s in c.get("/api/v1/sandboxes").json()}
            assert listed.get(src) == "running", listed
            for sid, st in listed.items():
                if st == "running":
                    r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "cat f.txt"})
                    assert r.status_code == 200 and r.json()["stdout"] == "forked\n", (sid, r.text)
            # The fork's snapshot, if recorded, is whole; delete it and nothing of it stays.
            for snap in c.get("/api/v1/snapshots").json():
                assert c.delete(f"/api/v1/snapshots/{snap['id']}").status_code == 200
            wait_for(lambda: not _snap_tags(cluster) and not _helpers(cluster)
                  and not _ws_volumes(cluster), 30,
                  f"snapshot data to go: {_snap_tags(cluster)} {_helpers(cluster)}")
    finally:
        _cleanup(cluster)


def test_kill9_around_pause_never_leaves_a_running_record_frozen(server_factory):
    """Pause writes the record, then freezes; a crash in between leaves `paused` over a running
    container, which resume puts right. Never `running` over a frozen one."""
    srv, cluster = _start(server_factory, "crash-pause")
    try:
        for delay in (0.0, 0.01, 0.03, 0.08):
            with srv.http(timeout=60) as c:
                sid = c.post("/api/v1/sandboxes", json={"ttl": "10m"}).json()["id"]
                t, out = _in_background(lambda: srv.http(timeout=60).post(
                    f"/api/v1/sandboxes/{sid}/pause"))
                time.sleep(delay)
                _kill9(srv)
                t.join(timeout=10)
            srv.start()
            with srv.http(timeout=60) as c:
                st = c.get(f"/api/v1/sandboxes/{sid}").json()["state"]
                frozen = _docker("inspect", "-f", "{{.State.Paused}}", sid).strip() == "true"
                assert st in ("running", "paused"), st
                assert not (st == "running" and frozen), f"running record over a frozen container ({delay})"
                if st == "paused":
                    r = c.post(f"/api/v1/sandboxes/{sid}/resume")
                    assert r.status_code == 200, r.text
                assert _docker("inspect", "-f", "{{.State.Paused}}", sid).strip() == "false"
                r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "echo up"})
                assert r.status_code == 200 and r.json()["stdout"] == "up\n", r.text
                assert c.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
    finally:
        _cleanup(cluster)
