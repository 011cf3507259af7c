"""A gracefully stopped `stacyvm serve` takes its microvm warm pool with it: after SIGTERM no
QEMU of that server's pool is left and the pool directory is gone (docs/microvm.md, *Warm
pool*). Needs `scripts/setup-microvm.sh` assets."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import Server, require_backend

IMAGE = "stacyvm-test/busybox:latest"
DATA_DIR = Path(os.environ.get("STACYVM_MICROVM_DIR", "/var/lib/stacyvm/microvm"))

pytestmark = pytest.mark.backend("qemu")


def qemu_pids_under(path: Path) -> set[int]:
    """QEMU processes whose command line names a file under `path`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu" in argv[0] and any(str(path).encode() in a for a in argv):
            found.add(int(entry.name))
    return found


def wait_for(what: str, bound_s: float, ok) -> None:
    deadline = time.monotonic() + bound_s
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_sigterm_removes_the_warm_pool(_clean_work_root):
    cfg = {
        "providers": {"default": "microvm",
                      "microvm": {"enabled": True, "warm_pool": 1, "data_dir": str(DATA_DIR)}},
        "defaults": {"image": IMAGE, "memory_mb": 256},
    }
    srv = Server(cfg, "microvm-shutdown").start()
    try:
        with srv.http(timeout=240) as c:
            vm = {p["name"]: p for p in c.get("/api/v1/providers").json()}.get("microvm", {})
            require_backend("qemu", bool(vm.get("healthy")),
                            f"microvm provider unhealthy: {vm.get('error', 'not registered')}")
            # A spawn restored from the image's template makes the pool keep clones of it.
            r = c.post("/api/v1/sandboxes", json={"image": IMAGE, "memory_mb": 256, "ttl": "5m"})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            assert c.delete(f"/api/v1/sandboxes/{sid}").status_code in (200, 204)
        wait_for("the warm pool to fill", 240,
                 lambda: "microvm warm pool clone ready" in srv.log_path.read_text(errors="replace"))
        assert srv.proc is not None
        pid = srv.proc.pid
        pools = list((DATA_DIR / "pool").glob(f"{pid}-*"))
        assert len(pools) == 1, pools
        assert qemu_pids_under(pools[0]), "no pooled QEMU found while the pool is full"

        # SIGTERM to the server alone (not its group: QEMU has its own groups anyway).
        os.kill(pid, signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0, srv.log_tail()
        # The provider's shutdown ran (not only its drop, which kills without waiting).
        assert "microvm warm pool shut down" in srv.log_path.read_text(errors="replace")
        assert not pools[0].exists(), f"pool directory left: {list(pools[0].iterdir())}"
        assert not qemu_pids_under(pools[0]), "pooled QEMU left after SIGTERM"
    finally:
        srv.stop()
