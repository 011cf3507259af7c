"""Volumes, snapshots and fork on the docker provider through the live server (issue 12,
docs/state.md): what an agent does with them, checked against docker itself (the volume and
the snapshot image exist, and are gone after their delete), and the contract's errors.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from typing import Iterator

import pytest
from conftest import Server, assert_error, require_backend

IMAGE = "stacyvm-test/busybox:latest"

pytestmark = pytest.mark.backend("docker")


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def srv(_clean_work_root) -> Iterator[Server]:
    require_backend("docker", _docker_ok(), f"docker daemon with image {IMAGE}")
    s = Server({
        "providers": {"default": "docker", "docker": {"enabled": True, "default_image": IMAGE}},
        "defaults": {"image": IMAGE},
    }, "state-docker").start()
    yield s
    s.stop()


def _spawn(http, **body) -> str:
    r = http.post("/api/v1/sandboxes", json={"image": IMAGE, "ttl": "10m", **body})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _sh(http, sid: str, cmd: str) -> dict:
    r = http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": cmd})
    assert r.status_code == 200, r.text
    return r.json()


def _destroy(http, sid: str) -> None:
    assert http.delete(f"/api/v1/sandboxes/{sid}").status_code == 200


def test_a_volume_outlives_its_sandbox_and_is_one_writers(srv: Server) -> None:
    http = srv.http()
    name = f"vol{uuid.uuid4().hex[:8]}"
    r = http.post("/api/v1/volumes", json={"name": name})
    assert r.status_code == 201, r.text
    assert_error(http.post("/api/v1/volumes", json={"name": name}), 409, "CONFLICT")
    listed = _docker("volume", "ls", "-q", "--filter", f"label=stacyvm.volume={name}").stdout.split()
    assert len(listed) == 1, listed

    a = _spawn(http, volumes=[{"name": name, "mount_path": "/data"}])
    assert _sh(http, a, "echo kept > /data/f && cat /data/f")["stdout"] == "kept\n"
    # The files API sees the same volume.
    assert http.get(f"/api/v1/sandboxes/{a}/files", params={"path": "/data/f"}).content == b"kept\n"
    # One writer at a time; deleting a volume in use is refused; a system path is refused.
    assert_error(http.post("/api/v1/sandboxes", json={
        "image": IMAGE, "volumes": [{"name": name, "mount_path": "/data"}]}), 409, "CONFLICT")
    assert_error(http.delete(f"/api/v1/volumes/{name}"), 409, "VOLUME_IN_USE")
    assert_error(http.post("/api/v1/sandboxes", json={
        "image": IMAGE, "volumes": [{"name": name, "mount_path": "/etc"}]}), 400, "BAD_REQUEST")
    assert_error(http.post("/api/v1/sandboxes", json={
        "image": IMAGE, "volumes": [{"name": "no-such-volume", "mount_path": "/data"}]}), 404, "NOT_FOUND")
    # A reader beside the writer is fine, and cannot write.
    ro = _spawn(http, volumes=[{"name": name, "mount_path": "/ro", "read_only": True}])
    assert _sh(http, ro, "cat /ro/f")["stdout"] == "kept\n"
    assert _sh(http, ro, "echo x > /ro/g")["exit_code"] != 0
    _destroy(http, ro)

    _destroy(http, a)
    b = _spawn(http, volumes=[{"name": name, "mount_path": "/mnt/vol"}])
    assert _sh(http, b, "cat /mnt/vol/f")["stdout"] == "kept\n"
    _destroy(http, b)
    assert http.delete(f"/api/v1/volumes/{name}").status_code == 200
    assert_error(http.get(f"/api/v1/volumes/{name}"), 404, "NOT_FOUND")
    gone = _docker("volume", "ls", "-q", "--filter", f"label=stacyvm.volume={name}").stdout.split()
    assert gone == [], gone


def test_a_snapshot_restores_files_and_fork_copies(srv: Server) -> None:
    http = srv.http()
    src = _spawn(http)
    _sh(http, src, "echo before > /workspace/w && mkdir -p /tmp/t && echo root > /tmp/t/r")
    r = http.post(f"/api/v1/sandboxes/{src}/snapshots", json={"name": "e2e"})
    assert r.status_code == 201, r.text
    snap = r.json()
    assert (snap["kind"], snap["sandbox_id"], snap["provider"]) == ("filesystem", src, "docker")
    sid = snap["id"]
    assert _docker("image", "inspect", f"stacyvm-snap:{sid}").returncode == 0
    # The source goes on; later changes are not in the snapshot.
    _sh(http, src, "echo after > /workspace/w")

    restored = _spawn(http, snapshot=sid)
    assert _sh(http, restored, "cat /workspace/w /tmp/t/r")["stdout"] == "before\nroot\n"

    r = http.post(f"/api/v1/sandboxes/{src}/fork", json={"count": 2})
    assert r.status_code == 201, r.text
    forks = [s["id"] for s in r.json()]
    assert len(forks) == 2 and len(set(forks)) == 2
    for f in forks:
        assert _sh(http, f, "cat /workspace/w")["stdout"] == "after\n"
    # Copies are independent.
    _sh(http, forks[0], "echo mine > /workspace/w")
    assert _sh(http, forks[1], "cat /workspace/w")["stdout"] == "after\n"

    assert_error(http.get("/api/v1/snapshots/snap-00000000"), 404, "SNAPSHOT_NOT_FOUND")
    assert_error(http.post("/api/v1/sandboxes", json={"snapshot": "snap-00000000"}), 404,
                 "SNAPSHOT_NOT_FOUND")
    for s in [src, restored, *forks]:
        _destroy(http, s)
    assert http.delete(f"/api/v1/snapshots/{sid}").status_code == 200
    assert_error(http.get(f"/api/v1/snapshots/{sid}"), 404, "SNAPSHOT_NOT_FOUND")
    assert _docker("image", "inspect", f"stacyvm-snap:{sid}").returncode != 0
