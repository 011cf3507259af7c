"""Shutdown and crash behaviour: graceful SIGTERM finishes in-flight work; kill -9 loses no
record; restart reconciles runtimes with the store and leaves no orphaned container."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import Server, require_backend

DOCKER_IMAGE = "stacyvm-test/busybox:latest"


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    r = subprocess.run(["docker", "image", "inspect", DOCKER_IMAGE], capture_output=True)
    return r.returncode == 0


def _docker_ids(label_sandbox: str | None = None) -> set[str]:
    filt = ["--filter", "label=stacyvm.managed=true"]
    if label_sandbox:
        filt += ["--filter", f"label=stacyvm.sandbox_id={label_sandbox}"]
    out = subprocess.run(["docker", "ps", "-a", "-q", "--no-trunc", *filt],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _docker_sandbox_ids() -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=stacyvm.managed=true",
         "--format", '{{.Label "stacyvm.sandbox_id"}}'],
        capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _kill9(srv: Server) -> None:
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=10)
    srv.proc = None


def test_sigterm_finishes_inflight_exec(server_factory):
    srv = server_factory(None, name="graceful")
    with srv.http() as c:
        sid = c.post("/api/v1/sandboxes", json={"image": "alpine"}).json()["id"]
        result: dict = {}

        def run():
            with srv.http(timeout=30) as c2:
                r = c2.post(f"/api/v1/sandboxes/{sid}/exec",
                            json={"command": "sleep 1.5; echo finished"})
                result["status"] = r.status_code
                result["body"] = r.json()

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        assert srv.proc is not None
        os.kill(srv.proc.pid, signal.SIGTERM)  # the server only, not its process group
        t.join(timeout=20)
        assert result.get("status") == 200, result
        assert result["body"]["stdout"] == "finished\n"
        assert srv.proc.wait(timeout=20) == 0, srv.log_tail()
        srv.proc = None


def test_kill9_keeps_records_and_reconciles_mock(server_factory):
    srv = server_factory(None, name="kill9-mock")
    with srv.http() as c:
        ids = [c.post("/api/v1/sandboxes", json={"image": "alpine"}).json()["id"] for _ in range(3)]
    _kill9(srv)
    srv.start()  # same directory, same database
    with srv.http() as c:
        # The mock's runtimes lived in the dead process: restart marks them destroyed (kept as
        # history, hidden from list/get), never silently running.
        listed = {s["id"] for s in c.get("/api/v1/sandboxes").json()}
        assert not (set(ids) & listed), listed
        for sid in ids:
            assert c.get(f"/api/v1/sandboxes/{sid}").status_code == 404
        # The server works normally afterwards.
        r = c.post("/api/v1/sandboxes", json={"image": "alpine"})
        assert r.status_code == 201, r.text


def test_kill9_docker_no_orphans(server_factory):
    require_backend("docker", _docker_ok(), f"docker daemon with image {DOCKER_IMAGE}")
    cfg = {"providers": {"default": "docker", "docker": {"enabled": True, "default_image": DOCKER_IMAGE}}}
    srv = server_factory(cfg, name="kill9-docker")
    with srv.http(timeout=60) as c:
        ids = []
        for _ in range(3):
            r = c.post("/api/v1/sandboxes", json={"image": DOCKER_IMAGE, "ttl": "10m"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    _kill9(srv)
    # An orphan: a container labelled ours that no record wants.
    orphan = "sb-0rphan00"
    subprocess.run(["docker", "run", "-d", "--label", "stacyvm.managed=true",
                    "--label", f"stacyvm.sandbox_id={orphan}", "--name", f"stacyvm-e2e-{orphan}",
                    DOCKER_IMAGE, "sleep", "600"], check=True, capture_output=True)
    try:
        srv.start()
        with srv.http(timeout=60) as c:
            listed = {s["id"]: s for s in c.get("/api/v1/sandboxes").json()}
            for sid in ids:
                assert listed[sid]["state"] == "running", listed.get(sid)
                r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "echo alive"})
                assert r.status_code == 200 and r.json()["stdout"] == "alive\n", r.text
            assert not _docker_ids(orphan), "orphaned container survived startup reconciliation"
            for sid in ids:
                assert c.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
        remaining = _docker_sandbox_ids() & set(ids)
        assert not remaining, f"containers left after destroy: {remaining}"
    finally:
        subprocess.run(["docker", "rm", "-f", f"stacyvm-e2e-{orphan}"], capture_output=True)
