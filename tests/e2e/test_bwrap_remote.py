"""The bwrap provider behind a remote worker: a control plane whose only placement is a real
`stacyvm worker` running bwrap sandboxes over its own image store; the SDK's calls (exec, files,
destroy) go through the worker RPC to the sandbox's agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import BIN, require_backend
from test_bwrap_sdk import IMAGE, _bwrap_ok, _sandbox_dirs
from test_remote_faults import TOKEN, Worker

pytestmark = pytest.mark.backend("bwrap")


@pytest.fixture
def bwrap_cluster(server_factory):
    ok, why = _bwrap_ok()
    require_backend("bwrap", ok, why)
    # The control plane knows the provider by name (as with docker workers); placement then
    # takes the worker, the only one left.
    cp = server_factory({"auth": {"worker_token": TOKEN},
                         "providers": {"default": "mock", "mock": {"enabled": True},
                                       "bwrap": {"enabled": True}}}, name="bwrap-remote")
    root = Path(cp.dir) / "worker-bwrap"
    images, data = root / "images", root / "data"
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), IMAGE], check=True, capture_output=True)
    subprocess.run([str(BIN), "image", "--root", str(images), "import", str(archive)],
                   check=True, capture_output=True)
    w = Worker(cp, config_extra={"providers": {
        "default": "bwrap", "bwrap": {"data_dir": str(data), "images_dir": str(images)}}}).start()
    with cp.http() as c:
        # Placement must pick the worker, not the control plane's own `local`.
        assert c.delete("/api/v1/admin/workers/local").status_code == 200
    yield cp, w, data
    w.stop()


def test_a_bwrap_sandbox_on_a_remote_worker(bwrap_cluster):
    cp, w, data = bwrap_cluster
    client = cp.sdk("sync")
    sb = client.spawn(image=IMAGE, provider="bwrap")
    try:
        assert sb.provider == "bwrap"
        with cp.http() as c:
            r = c.get(f"/api/v1/sandboxes/{sb.id}")
            assert r.json()["worker_id"] == w.id, r.text
        r = sb.exec("cat /proc/1/comm; hostname")
        assert r.stdout.split() == ["agent", sb.id]
        sb.write_file("/workspace/remote.txt", "through the worker\n")
        assert sb.read_file("/workspace/remote.txt") == "through the worker\n"
        assert _sandbox_dirs(data), "the sandbox lives in the worker's data dir"
    finally:
        sb.destroy()
        client.close()
    assert sb.id not in _sandbox_dirs(data)
