#!/usr/bin/env python3
"""Soak benchmark (hardening harness, docs/testing.md): a mixed workload against a control
plane and one remote worker for a configurable time, with the worker restarted every minute.

Each client loops: spawn, sync exec, streamed exec (NDJSON), write a file and read it back
(bytes compared), destroy. Every report interval it prints throughput, p50/p99 per operation,
errors, and the RSS and open descriptors of both processes; at the end it destroys whatever is
left through the API and prints what leaked: sandboxes still listed, mock runtimes (sandbox
directories) left on either side, descriptors above the warm baseline, stray child processes.
Leaks must all be zero. A figure printer, not a test: nothing here asserts a speed.

    cargo build --release -p stacyvm
    .venv/bin/python bench/soak.py --bin target/release/stacyvm --minutes 30
    .venv/bin/python bench/soak.py --bin target/debug/stacyvm --minutes 2 --restart-every 30

Needs httpx (the e2e venv has it). Mock provider on both sides, SQLite, loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

API_KEY = "soak-api-key-0123456789abcdef"
ADMIN_KEY = "soak-admin-key-0123456789abcdef"
WORKER_TOKEN = "soak-worker-token-0123456789abcdef"
WORKER_ID = "soak-worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_figures(pid: int) -> tuple[float, int]:
    """RSS in MiB and open descriptors of `pid` (0, 0 when it is gone)."""
    try:
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
        return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return 0.0, 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Cluster:
    def __init__(self, binary: str, work: Path):
        self.bin, self.work = binary, work
        self.cp_port, self.w_port = free_port(), free_port()
        providers = "{default: mock, mock: {enabled: true}, docker: {enabled: false}}"
        (work / "cp.yaml").write_text(
            f"server: {{host: 127.0.0.1, port: {self.cp_port}}}\nproviders: {providers}\n"
            f"auth: {{api_key: {API_KEY}, admin_api_key: {ADMIN_KEY}, worker_token: {WORKER_TOKEN}}}\n"
            f"database: {{driver: sqlite, path: {work / 'cp.db'}}}\n"
            "logging: {level: warn, format: json}\n")
        (work / "worker.yaml").write_text(
            f"worker: {{id: {WORKER_ID}, control_plane_url: 'http://127.0.0.1:{self.cp_port}', "
            f"listen_addr: '127.0.0.1:{self.w_port}', heartbeat_interval: 2s}}\n"
            f"providers: {providers}\nauth: {{worker_token: {WORKER_TOKEN}}}\n"
            "logging: {level: warn, format: json}\n")
        self.cp = self._start("cp", "serve")
        self.worker: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.cp_port}/api/v1"

    def _start(self, role: str, cmd: str) -> subprocess.Popen:
        tmp = self.work / f"{role}-sandboxes"
        tmp.mkdir(exist_ok=True)
        log = open(self.work / f"{role}.log", "ab")
        return subprocess.Popen([self.bin, cmd], cwd=self.work, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True,
                                env={**os.environ, "STACYVM_CONFIG": str(self.work / f"{role}.yaml"),
                                     "TMPDIR": str(tmp)})

    def start_worker(self) -> None:
        self.worker = self._start("worker", "worker")

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()

    def runtimes_left(self) -> dict[str, int]:
        return {role: len(list((self.work / f"{role}-sandboxes").iterdir())) for role in ("cp", "worker")}

    def stop(self) -> None:
        self.stop_worker()
        for p in (self.cp, self.worker):
            if p and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.last_error: dict[str, str] = {}
        self.placed: dict[str, int] = defaultdict(int)

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.lat[op].append(seconds)

    def error(self, op: str, what: str) -> None:
        with self.lock:
            self.errors[op] += 1
            self.last_error[op] = what[:160]

    def take(self):
        with self.lock:
            lat, errors, last = self.lat, self.errors, self.last_error
            self.lat, self.errors, self.last_error = defaultdict(list), defaultdict(int), {}
        return lat, errors, last


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def client_loop(base: str, stats: Stats, stop: threading.Event, seed: int) -> None:
    rnd = random.Random(seed)
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=60) as c:
        while not stop.is_set():
            sid = None

            def step(op: str, fn):
                t = time.perf_counter()
                try:
                    ok = fn()
                except httpx.HTTPError as e:
                    ok = f"{type(e).__name__}: {e}"
                if ok is True:
                    stats.record(op, time.perf_counter() - t)
                    return True
                stats.error(op, str(ok))
                return False

            def spawn():
                nonlocal sid
                r = c.post("/sandboxes", json={"ttl": "10m"})
                if r.status_code != 201:
                    return f"{r.status_code} {r.text}"
                sid = r.json()["id"]
                with stats.lock:
                    stats.placed[r.json().get("worker_id") or "local"] += 1
                return True

            def exec_sync():
                r = c.post(f"/sandboxes/{sid}/exec", json={"command": "echo soak; echo err >&2"})
                return r.status_code == 200 and r.json().get("stdout") == "soak\n" or f"{r.status_code} {r.text}"

            def exec_stream():
                with c.stream("POST", f"/sandboxes/{sid}/exec",
                              json={"command": "for i in 1 2 3; do echo $i; done", "stream": True}) as r:
                    if r.status_code != 200:
                        return f"{r.status_code} {r.read().decode(errors='replace')}"
                    lines = [json.loads(x) for x in r.iter_lines() if x.strip()]
                out = "".join(x.get("data", "") for x in lines if x.get("stream") == "stdout")
                return out == "1\n2\n3\n" or f"stream said {lines[-3:]}"

            def files():
                data = rnd.randbytes(64 * 1024)
                r = c.put(f"/sandboxes/{sid}/files", params={"path": "/workspace/soak.bin"}, content=data)
                if r.status_code >= 300:
                    return f"{r.status_code} {r.text}"
                r = c.get(f"/sandboxes/{sid}/files", params={"path": "/workspace/soak.bin"})
                return r.status_code == 200 and r.content == data or f"{r.status_code} read back {len(r.content)} bytes"

            def destroy():
                r = c.delete(f"/sandboxes/{sid}")
                return r.status_code in (200, 204) or f"{r.status_code} {r.text}"

            if not step("spawn", spawn):
                time.sleep(0.2)
                continue
            for op, fn in (("exec", exec_sync), ("stream", exec_stream), ("files", files)):
                step(op, fn)
            step("destroy", destroy)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/stacyvm")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--restart-every", type=float, default=60, help="seconds between worker restarts")
    ap.add_argument("--report-every", type=float, default=60)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stacyvm-soak-"))
    cl = Cluster(str(Path(a.bin).resolve()), work)
    admin = httpx.Client(base_url=cl.base, headers={"X-API-Key": API_KEY, "X-Admin-API-Key": ADMIN_KEY}, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if admin.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        cl.start_worker()
        print(f"soak: {a.minutes} min, {a.clients} clients, worker restart every {a.restart_every:.0f} s; "
              f"work dir {work}", flush=True)
        stats, stop = Stats(), threading.Event()
        threads = [threading.Thread(target=client_loop, args=(cl.base, stats, stop, k), daemon=True)
                   for k in range(a.clients)]
        for t in threads:
            t.start()
        start = time.monotonic()
        next_restart, next_report = start + a.restart_every, start + a.report_every
        restarts, baseline_fds = 0, None
        # `local` wins placement whenever it is registered (wire §9.6), and the control plane
        # re-registers itself every 30 s: deleting its record now and then sends the spawns of
        # the next stretch to the remote worker, as the staging guide does once.
        next_unlocal = start + 5
        print(f"{'t(s)':>6} {'ops/s':>7} " + " ".join(f"{op + ' p50/p99':>20}" for op in
              ("spawn", "exec", "stream", "files", "destroy")) +
              f" {'errors':>7} {'cp MiB':>7} {'cp fds':>6} {'w MiB':>6} {'w fds':>5}", flush=True)
        while time.monotonic() - start < a.minutes * 60:
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_restart:
                cl.stop_worker()
                cl.start_worker()
                restarts += 1
                next_restart = now + a.restart_every
            if now >= next_unlocal:
                admin.delete("/admin/workers/local")
                next_unlocal = now + 45
            if now >= next_report:
                lat, errors, last = stats.take()
                n = sum(len(v) for v in lat.values())
                cp_rss, cp_fds = proc_figures(cl.cp.pid)
                w_rss, w_fds = proc_figures(cl.worker.pid if cl.worker else 0)
                if baseline_fds is None:
                    baseline_fds = cp_fds
                cols = " ".join(f"{pct(lat[op], .5):>9.1f}/{pct(lat[op], .99):<10.1f}"
                                for op in ("spawn", "exec", "stream", "files", "destroy"))
                print(f"{now - start:>6.0f} {n / a.report_every:>7.1f} {cols} {sum(errors.values()):>7} "
                      f"{cp_rss:>7.1f} {cp_fds:>6} {w_rss:>6.1f} {w_fds:>5}", flush=True)
                for op, what in last.items():
                    print(f"       last {op} error ({errors[op]}x): {what}", flush=True)
                next_report = now + a.report_every
        stop.set()
        for t in threads:
            t.join(timeout=120)
        # Everything left is destroyed through the API; what remains after that leaked.
        for sb in admin.get("/sandboxes").json():
            admin.delete(f"/sandboxes/{sb['id']}")
        time.sleep(5)
        listed = admin.get("/sandboxes").json()
        # Pooled connections to the worker close when idle (90 s): wait for them before
        # counting, so only descriptors that never close count as leaked.
        wait_until = time.monotonic() + 100
        _, cp_fds = proc_figures(cl.cp.pid)
        while baseline_fds is not None and cp_fds > baseline_fds and time.monotonic() < wait_until:
            time.sleep(2)
            _, cp_fds = proc_figures(cl.cp.pid)
        strays = {"cp": len(children(cl.cp.pid)), "worker": len(children(cl.worker.pid)) if cl.worker else 0}
        runtimes = cl.runtimes_left()
        print(f"\nworker restarts: {restarts}; sandboxes placed: {dict(stats.placed)}")
        print(f"leaked sandboxes (still listed after destroying all): {len(listed)}")
        print(f"leaked runtimes (mock sandbox dirs left): control plane {runtimes['cp']}, worker {runtimes['worker']}")
        print(f"descriptors: control plane {cp_fds} at the end, {baseline_fds} at the first report "
              f"(leaked: {max(0, cp_fds - (baseline_fds or cp_fds))})")
        print(f"stray child processes: control plane {strays['cp']}, worker {strays['worker']}")
        leaked = len(listed) + sum(runtimes.values()) + max(0, cp_fds - (baseline_fds or cp_fds)) + sum(strays.values())
        print(f"total leaked: {leaked}")
        return 0 if leaked == 0 else 1
    finally:
        admin.close()
        cl.stop()


if __name__ == "__main__":
    sys.exit(main())
