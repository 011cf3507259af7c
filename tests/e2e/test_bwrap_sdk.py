"""The SDK end-to-end suite on the bwrap provider (docs/bwrap.md): a server with
`providers.default: bwrap`, its image store filled by `stacyvm image import` of the test image
(no registry, and no Docker daemon needed by the provider itself), driven by the official SDK,
sync and async: lifecycle, exec, env, files (binary-exact), isolation seen through the API
(only `lo`, the agent as pid 1, no capabilities, seccomp), and destroy leaving nothing behind.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import stacyvm
from conftest import BIN, WORK_ROOT, Server, require_backend

IMAGE = "stacyvm-test/busybox:latest"

pytestmark = pytest.mark.backend("bwrap")


def _bwrap_ok() -> tuple[bool, str]:
    if shutil.which("bwrap") is None:
        return False, "bubblewrap is not installed"
    if shutil.which("docker") is None:
        return False, "docker is needed to save the test image for the store"
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if r.returncode != 0:
        return False, f"docker has no {IMAGE}"
    return True, ""


@pytest.fixture(scope="module")
def bsrv(_clean_work_root) -> Iterator[Server]:
    ok, why = _bwrap_ok()
    require_backend("bwrap", ok, why)
    root = WORK_ROOT / "bwrap"
    images, data = root / "images", root / "data"
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), IMAGE], check=True, capture_output=True)
    subprocess.run([str(BIN), "image", "--root", str(images), "import", str(archive)],
                   check=True, capture_output=True)
    srv = Server({
        "providers": {"default": "bwrap",
                      "bwrap": {"data_dir": str(data), "images_dir": str(images)}},
        "defaults": {"image": IMAGE},
    }, "bwrap-sdk").start()
    srv.data_dir = data
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["sync", "async"])
def bclient(request, bsrv):
    client = bsrv.sdk(request.param)
    yield client
    client.close()


def _sandbox_dirs(data: Path) -> list[str]:
    return sorted(p.name for p in data.rglob("sb-*") if p.is_dir()) if data.exists() else []


def test_spawn_exec_files_and_destroy(bclient, bsrv):
    sb = bclient.spawn(image=IMAGE)
    try:
        assert sb.provider == "bwrap"
        r = sb.exec("echo hi; echo err >&2; exit 3")
        assert (r.exit_code, r.stdout, r.stderr) == (3, "hi\n", "err\n")
        r = sb.exec("echo $GREETING", env={"GREETING": "hello"})
        assert r.stdout == "hello\n"
        sb.write_file("/workspace/note.txt", "bytes through the agent\n")
        assert sb.read_file("/workspace/note.txt") == "bytes through the agent\n"
        r = sb.exec("wc -c < /workspace/note.txt")
        assert r.stdout.strip() == "24"
        assert any(f["path"].endswith("note.txt") for f in sb.list_files("/workspace"))
        assert _sandbox_dirs(bsrv.data_dir), "the sandbox has a directory while it lives"
    finally:
        sb.destroy()
    with pytest.raises(stacyvm.SandboxNotFound):
        sb.exec("true")
    assert sb.id not in _sandbox_dirs(bsrv.data_dir)
    mounts = Path("/proc/mounts").read_text()
    assert sb.id not in mounts, "destroy left a mount behind"


def test_isolation_seen_from_inside(bclient):
    sb = bclient.spawn(image=IMAGE)
    try:
        r = sb.exec("ls /sys/class/net 2>/dev/null || cat /proc/net/dev")
        assert "eth0" not in r.stdout and "docker0" not in r.stdout, r.stdout
        assert sb.exec("cat /proc/1/comm").stdout.strip() == "agent"
        status = sb.exec("grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status").stdout
        fields = dict(line.split(":\t") for line in status.strip().splitlines())
        assert fields == {"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}, status
        # The host's processes are not visible: only the sandbox's own.
        pids = sb.exec("ls /proc | grep -c '^[0-9]'").stdout.strip()
        assert int(pids) < 20, pids
        r = sb.exec("mount -t tmpfs none /mnt")
        assert r.exit_code != 0
    finally:
        sb.destroy()
