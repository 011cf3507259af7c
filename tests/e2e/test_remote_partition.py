"""A real network partition between the control plane and a worker (hardening finding 18):
the worker runs in a network namespace of its own, joined to the host by a veth pair, and the
link is cut and restored while both processes keep running. test_remote_faults.py freezes the
worker with SIGSTOP instead, which also stops its sandboxes; here they keep running.

What is checked (docs/worker.md, "Partitions"):
- during the cut, the control plane marks the worker's sandbox `unhealthy` and a sandbox whose
  TTL passes `expired`, releasing its lease; the worker process and its sandboxes' runtimes
  (with what was written in them) are still there;
- the worker, which only acts on the control plane's calls, does nothing to them meanwhile;
- after the heal, the healthy sandbox is `running` and runs commands again, the expired one is
  destroyed on the worker (its runtime goes), and no sandbox is held by two owners.

Needs root (`ip netns`); marked backend("netns"), so it is skipped elsewhere and fails under
CI=true if namespaces cannot be made.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, free_port, require_backend
from test_remote_faults import HB, TOKEN, wait_for

pytestmark = pytest.mark.backend("netns")


def sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True)


class Link:
    """A network namespace joined to the host by a veth pair on 10.231.N.0/30."""

    def __init__(self):
        n = random.randrange(1, 250)
        self.ns, self.host_if, self.ns_if = f"svmp{n}", f"svmh{n}", f"svmn{n}"
        self.host_ip, self.ns_ip = f"10.231.{n}.1", f"10.231.{n}.2"

    def up(self) -> bool:
        steps = [
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
            ["ip", "link", "set", self.ns_if, "netns", self.ns],
            ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if],
            ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up"],
            ["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"],
        ]
        return all(sh(*s).returncode == 0 for s in steps)

    def cut(self) -> None:
        assert sh("ip", "link", "set", self.host_if, "down").returncode == 0

    def heal(self) -> None:
        assert sh("ip", "link", "set", self.host_if, "up").returncode == 0

    def remove(self) -> None:
        sh("ip", "link", "del", self.host_if)
        sh("ip", "netns", "del", self.ns)


@pytest.fixture
def partitioned(server_factory):
    link = Link()
    ok = os.geteuid() == 0 and link.up()
    if not ok:
        link.remove()
    require_backend("netns", ok, "needs root and `ip netns`")
    # The control plane listens on every address so the worker reaches it over the veth.
    cp = server_factory({
        "server": {"host": "0.0.0.0", "allow_unauthenticated": True,
                   "reconcile_interval": "500ms"},
        "auth": {"worker_token": TOKEN},
        "worker": {"stale_after_intervals": 3},
    }, name="partition")
    wdir = Path(cp.dir) / "worker"
    wdir.mkdir()
    wport = free_port()
    cfg = {
        "worker": {"id": "worker-p", "control_plane_url": f"http://{link.host_ip}:{cp.port}",
                   "listen_addr": f"{link.ns_ip}:{wport}", "heartbeat_interval": HB},
        "providers": {"default": "mock", "mock": {"enabled": True}},
        "auth": {"worker_token": TOKEN},
        "logging": {"level": "debug", "format": "json"},
    }
    (wdir / "worker.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACYVM_")}
    env.update({"STACYVM_CONFIG": str(wdir / "worker.yaml"), "TMPDIR": str(wdir), "HOME": str(wdir)})
    log = open(wdir / "worker.log", "ab")
    worker = subprocess.Popen(["ip", "netns", "exec", link.ns, str(BIN), "worker"], cwd=wdir, env=env,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    log.close()
    try:
        with cp.http() as c:
            wait_for(lambda: c.get("/api/v1/workers/worker-p").status_code == 200, 20,
                     "worker registration over the veth")
            assert c.delete("/api/v1/admin/workers/local").status_code == 200
        yield cp, worker, wdir, link
    finally:
        link.heal()
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait(timeout=10)
        link.remove()


def state(c, sid: str) -> str | None:
    for s in c.get("/api/v1/sandboxes").json():
        if s["id"] == sid:
            return s["state"]
    return None


def runtime_dir(wdir: Path, sid: str) -> list[Path]:
    """The mock runtime of `sid` on the worker (a host directory `stacyvm-<id>-*`)."""
    return list(wdir.glob(f"stacyvm-{sid}-*"))


def test_a_real_partition_and_its_heal(partitioned):
    cp, worker, wdir, link = partitioned
    with cp.http(timeout=60) as c:
        spawned = []
        for ttl in ("10m", "6s"):
            r = c.post("/api/v1/sandboxes", json={"provider": "mock", "ttl": ttl})
            assert r.status_code == 201, r.text
            assert r.json()["worker_id"] == "worker-p", r.json()
            spawned.append(r.json()["id"])
        keep, expiring = spawned
        # Work that must survive the partition.
        r = c.post(f"/api/v1/sandboxes/{keep}/exec", json={"command": "echo kept > state.txt"})
        assert r.status_code == 200, r.text
        assert c.post(f"/api/v1/sandboxes/{expiring}/exec", json={"command": "true"}).status_code == 200
        assert runtime_dir(wdir, keep) and runtime_dir(wdir, expiring), list(wdir.iterdir())

        link.cut()
        # The control plane's view: unhealthy, then the expiring one expired with its lease
        # released.
        wait_for(lambda: state(c, keep) == "unhealthy", 20, "unhealthy during the cut")
        wait_for(lambda: state(c, expiring) == "expired", 30, "expired during the cut")
        leases = c.get("/api/v1/diagnostics").json()["leases"]
        assert leases["by_holder"].get("worker-p", 0) == 1, leases
        # The worker's side: alive, its runtimes and the sandbox's process untouched.
        assert worker.poll() is None, "the worker must keep running through a partition"
        assert runtime_dir(wdir, keep) and runtime_dir(wdir, expiring)
        # Requests for the sandbox fail clearly instead of hanging.
        r = c.post(f"/api/v1/sandboxes/{keep}/exec", json={"command": "true"}, timeout=60)
        assert r.status_code in (409, 502, 503), r.text

        link.heal()
        wait_for(lambda: state(c, keep) == "running", 30, "running after the heal")
        r = c.post(f"/api/v1/sandboxes/{keep}/exec", json={"command": "cat state.txt"})
        assert r.status_code == 200 and r.json()["stdout"] == "kept\n", r.text
        # The expired sandbox is finished on the worker too: record gone, runtime gone.
        wait_for(lambda: state(c, expiring) is None, 30, "expired sandbox destroyed after the heal")
        wait_for(lambda: not runtime_dir(wdir, expiring), 30, "expired runtime removed on the worker")
        # Nothing doubly owned: every live sandbox has one placement, one lease holder.
        live = [s for s in c.get("/api/v1/sandboxes").json() if s["state"] != "destroyed"]
        assert [s["id"] for s in live] == [keep], live
        assert live[0]["worker_id"] == "worker-p"
        leases = c.get("/api/v1/diagnostics").json()["leases"]
        # One sandbox lease left, the kept sandbox's, held by its worker (the other holders are
        # the control plane's own presence and leader leases).
        assert leases["by_holder"].get("worker-p") == 1, leases
        assert c.delete(f"/api/v1/sandboxes/{keep}").status_code == 200
        wait_for(lambda: not runtime_dir(wdir, keep), 30, "runtime removed after destroy")
