#!/usr/bin/env python3
"""Sandbox-state benchmark on docker (issue 12, docs/state.md). A figure printer, not a test.

Interleaved in one run, so machine noise hits both sides of each ratio alike:
1. pause + resume through the API against `docker pause` + `docker unpause` of a container
   of the same image (target ≤ 1.10×);
2. a snapshot of a sandbox with 100 MiB written to /workspace against `docker commit` of that
   container alone (target ≤ 1.10×; `docker commit` leaves the /workspace volume out, so it
   does less than a snapshot, which carries the workspace);
3. spawn p50 with a volume holding 1 GiB mounted against spawn without (target ≤ +10 %).

    cargo build --release -p stacyvm
    .venv/bin/python bench/state_bench.py --bin target/release/stacyvm --rounds 20

Needs dockerd and the image stacyvm-test/busybox:latest (scripts/setup-docker.sh).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

IMAGE = "stacyvm-test/busybox:latest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--snap-rounds", type=int, default=5)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="state-bench-"))
    port = free_port()
    cfg = work / "config.yaml"
    cfg.write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port}\n"
        f"database:\n  driver: sqlite\n  path: {work / 'stacyvm.db'}\n"
        f"providers:\n  default: docker\n  docker:\n    enabled: true\n    default_image: {IMAGE}\n"
        f"defaults:\n  image: {IMAGE}\n"
        "rate_limit:\n  enabled: false\nlogging:\n  level: warn\n"
    )
    env = dict(os.environ, STACYVM_CONFIG=str(cfg))
    log = open(work / "server.log", "w")
    srv = subprocess.Popen([a.bin, "serve"], stdout=log, stderr=log, env=env, cwd=work)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        for _ in range(200):
            try:
                if http.get("/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            sys.exit(f"server did not start; see {work / 'server.log'}")

        def spawn(**body) -> str:
            r = http.post("/api/v1/sandboxes", json={"image": IMAGE, "ttl": "30m", **body})
            r.raise_for_status()
            return r.json()["id"]

        def destroy(sid: str) -> None:
            http.delete(f"/api/v1/sandboxes/{sid}")

        def sh(sid: str, cmd: str) -> None:
            r = http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": cmd, "timeout": "10m"})
            r.raise_for_status()
            assert r.json()["exit_code"] == 0, r.json()

        def cid_of(sid: str) -> str:
            return docker("ps", "-q", "--filter", f"label=stacyvm.sandbox_id={sid}").split()[0]

        # 1. pause/resume.
        sb = spawn()
        bare = docker("run", "-d", "--rm", IMAGE, "sleep", "3600")
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(timed(lambda: (
                http.post(f"/api/v1/sandboxes/{sb}/pause").raise_for_status(),
                http.post(f"/api/v1/sandboxes/{sb}/resume", json={}).raise_for_status())))
            theirs.append(timed(lambda: (docker("pause", bare), docker("unpause", bare))))
        docker("rm", "-f", bare)
        print(f"pause+resume p50: API {p50(ours):.1f} ms, docker pause+unpause {p50(theirs):.1f} ms, "
              f"ratio {p50(ours) / p50(theirs):.2f}x (target <= 1.10x)")

        # 2. snapshot with 100 MiB written.
        sh(sb, "dd if=/dev/urandom of=/workspace/blob bs=1M count=100 2>/dev/null")
        cid = cid_of(sb)
        snaps, commits = [], []
        for i in range(a.snap_rounds):
            snap = {}
            snaps.append(timed(lambda: snap.update(http.post(
                f"/api/v1/sandboxes/{sb}/snapshots", json={}).raise_for_status().json())))
            http.delete(f"/api/v1/snapshots/{snap['id']}")
            tag = f"state-bench:{uuid.uuid4().hex[:8]}"
            commits.append(timed(lambda: docker("commit", cid, tag)))
            docker("rmi", "-f", tag)
        print(f"snapshot (100 MiB in /workspace) p50: API {p50(snaps):.1f} ms, docker commit alone "
              f"{p50(commits):.1f} ms, ratio {p50(snaps) / p50(commits):.2f}x (target <= 1.10x; "
              f"commit leaves the /workspace volume out)")
        destroy(sb)

        # 3. spawn with a 1 GiB volume.
        vol = f"bench{uuid.uuid4().hex[:8]}"
        http.post("/api/v1/volumes", json={"name": vol}).raise_for_status()
        filler = spawn(volumes=[{"name": vol, "mount_path": "/data"}])
        sh(filler, "for i in 0 1 2 3 4 5 6 7; do dd if=/dev/zero of=/data/f$i bs=1M count=128 2>/dev/null; done")
        destroy(filler)
        with_vol, without = [], []
        for _ in range(a.rounds):
            s = {}
            with_vol.append(timed(lambda: s.update(id=spawn(
                volumes=[{"name": vol, "mount_path": "/data", "read_only": True}]))))
            destroy(s["id"])
            without.append(timed(lambda: s.update(id=spawn())))
            destroy(s["id"])
        http.delete(f"/api/v1/volumes/{vol}")
        print(f"spawn p50: with a 1 GiB volume {p50(with_vol):.1f} ms, without {p50(without):.1f} ms, "
              f"+{(p50(with_vol) / p50(without) - 1) * 100:.1f} % (target <= +10 %)")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
