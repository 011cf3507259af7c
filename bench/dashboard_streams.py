#!/usr/bin/env python3
"""The console's event-stream budget (issue 14, docs/console.md): "the event stream to 20
open dashboards costs the control plane <= 5 % of one core". A figure printer, not a test.

Starts `stacyvm serve` (mock provider, SQLite in a temp dir, logging at warn, rate limit off),
drives a steady spawn+destroy load (`--rate` pairs/s, each pair 3 events: sandbox.created,
sandbox.running, sandbox.destroyed) and measures the server process's CPU time
(utime + stime from /proc/<pid>/stat) over `--duration` seconds, alternately without and with
`--streams` event streams open exactly as the console opens them: `GET /api/v1/events` with
`X-API-Key` and a browser's fetch headers, read to the end of every event. The difference,
per second of wall time, is the streams' cost as a share of one core. Also prints the /ui/
assets' compressed size (every file the page loads, gzipped as served).

    cargo build --release -p stacyvm
    .venv/bin/python bench/dashboard_streams.py --bin target/release/stacyvm

Needs httpx and PyYAML (the e2e venv has both).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

KEY = "dash_" + secrets.token_hex(16)
TICK = os.sysconf("SC_CLK_TCK")
# What Chromium's fetch() sends besides the console's own X-API-Key (js/api.js readEvents).
BROWSER_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate, br, zstd",
    "Accept-Language": "en-US,en;q=0.9",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "HeadlessChrome/131.0.0.0 Safari/537.36",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Dest": "empty",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    import yaml

    port = free_port()
    cfg = {
        "server": {"host": "127.0.0.1", "port": port},
        "providers": {"default": "mock", "mock": {"enabled": True}},
        "auth": {"api_key": KEY},
        "database": {"driver": "sqlite", "path": str(workdir / "bench.db")},
        "rate_limit": {"enabled": False},
        "logging": {"level": "warn"},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACYVM_")}
    env.update({"STACYVM_CONFIG": str(workdir / "config.yaml"), "TMPDIR": str(workdir)})
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1,
                         headers={"X-API-Key": KEY}).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("server did not start:\n" + (workdir / "server.log").read_text()[-2000:])


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (its threads included, children not)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Load:
    """`rate` spawn+destroy pairs per second, paced, from a few threads."""

    def __init__(self, url: str, rate: float, threads: int = 4) -> None:
        self.url, self.rate, self.threads = url, rate, threads
        self.pairs = 0
        self.errors = 0
        self.lock = threading.Lock()

    def run(self, seconds: float) -> None:
        stop = time.monotonic() + seconds
        interval = self.threads / self.rate

        def worker(offset: float) -> None:
            with httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=30) as c:
                nxt = time.monotonic() + offset
                while True:
                    now = time.monotonic()
                    if now >= stop:
                        return
                    if nxt > now:
                        time.sleep(min(nxt - now, stop - now))
                        continue
                    nxt += interval
                    try:
                        r = c.post("/api/v1/sandboxes", json={"image": "alpine", "ttl": "5m"})
                        r.raise_for_status()
                        c.delete(f"/api/v1/sandboxes/{r.json()['id']}").raise_for_status()
                        with self.lock:
                            self.pairs += 1
                    except httpx.HTTPError:
                        with self.lock:
                            self.errors += 1

        with ThreadPoolExecutor(self.threads) as ex:
            for i in range(self.threads):
                ex.submit(worker, i * interval / self.threads)


class Streams:
    """`n` event streams read like the console reads them (fetch + a body reader)."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.events = [0] * n
        self.stop = threading.Event()
        self.ready = threading.Barrier(n + 1)
        self.threads = [threading.Thread(target=self.read, args=(i,), daemon=True) for i in range(n)]

    def read(self, i: int) -> None:
        headers = {"X-API-Key": KEY, **BROWSER_HEADERS}
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(10, read=None)) as c:
            with c.stream("GET", "/api/v1/events", headers=headers) as r:
                r.raise_for_status()
                self.ready.wait()
                buf = b""
                for chunk in r.iter_raw():
                    buf += chunk
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        if b"data:" in block:
                            self.events[i] += 1
                    if self.stop.is_set():
                        return

    def __enter__(self) -> "Streams":
        for t in self.threads:
            t.start()
        self.ready.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        # A reader blocked in iter_raw wakes at the next event; the load has stopped by now,
        # so one more spawn wakes them all.
        with httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=10) as c:
            r = c.post("/api/v1/sandboxes", json={"image": "alpine"})
            c.delete(f"/api/v1/sandboxes/{r.json()['id']}")
        for t in self.threads:
            t.join(timeout=10)


def measure(pid: int, url: str, rate: float, seconds: float, streams: int) -> dict:
    load = Load(url, rate)
    ctx = Streams(url, streams) if streams else None
    if ctx:
        ctx.__enter__()
    time.sleep(1)  # the streams' connection set-up is not the steady cost
    c0, t0 = cpu_seconds(pid), time.monotonic()
    load.run(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    events = sum(ctx.events) if ctx else 0
    if ctx:
        ctx.__exit__(None, None, None)
    wall = t1 - t0
    return {"streams": streams, "wall": wall, "cpu": c1 - c0, "pairs": load.pairs,
            "errors": load.errors, "events": events, "core_pct": 100 * (c1 - c0) / wall}


def ui_size(url: str) -> tuple[int, int, list[tuple[str, int]]]:
    """Every file the page loads (index.html and what it links: modules, styles, icon),
    gzipped as served: (compressed total, uncompressed total, rows)."""
    rows = []
    raw_total = 0
    with httpx.Client(base_url=url, timeout=10) as c:
        index = c.get("/ui/").text
        paths = ["/ui/"] + sorted(set(re.findall(r'(?:href|src)="(/ui/[^"]+)"', index)))
        for p in paths:
            with c.stream("GET", p, headers={"Accept-Encoding": "gzip"}) as r:
                r.raise_for_status()
                assert r.headers.get("content-encoding") == "gzip", p
                body = b"".join(r.iter_raw())
            rows.append((p, len(body)))
            raw_total += len(c.get(p, headers={"Accept-Encoding": "identity"}).content)
    return sum(n for _, n in rows), raw_total, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/release/stacyvm")
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--rate", type=float, default=20.0, help="spawn+destroy pairs per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per measured phase")
    ap.add_argument("--rounds", type=int, default=2, help="alternations without/with streams")
    a = ap.parse_args()
    binary = a.bin if Path(a.bin).exists() else str(Path(__file__).resolve().parents[1] / a.bin)
    if "release" not in binary:
        print(f"note: {binary} is not a release build", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="stacyvm-dash-") as tmp:
        proc, url = start_server(binary, Path(tmp))
        try:
            print(f"server {binary} (pid {proc.pid}), {os.cpu_count()} CPUs, "
                  f"load {os.getloadavg()[0]:.2f} at start")
            Load(url, a.rate).run(3)  # warm-up
            results = []
            for r in range(a.rounds):
                for n in (0, a.streams) if r % 2 == 0 else (a.streams, 0):
                    m = measure(proc.pid, url, a.rate, a.duration, n)
                    results.append(m)
                    print(f"  round {r + 1}, {n:2} streams: {m['pairs'] / m['wall']:6.1f} pairs/s "
                          f"({m['errors']} errors), server CPU {m['cpu']:.2f} s in {m['wall']:.1f} s "
                          f"= {m['core_pct']:.2f} % of a core"
                          + (f", {m['events']} events delivered ({m['events'] / max(n, 1):.0f} per stream)"
                             if n else ""))
            base = statistics.mean(m["core_pct"] for m in results if m["streams"] == 0)
            with_s = statistics.mean(m["core_pct"] for m in results if m["streams"])
            eps = statistics.mean(m["events"] / m["wall"] for m in results if m["streams"])
            print(f"\nserver CPU without streams {base:.2f} % of a core, with {a.streams} streams "
                  f"{with_s:.2f} %: the streams cost {with_s - base:+.2f} % of one core "
                  f"(budget 5 %), {eps:.0f} events/s delivered in all; load "
                  f"{os.getloadavg()[0]:.2f} at the end")
            gz, raw, rows = ui_size(url)
            print(f"\n/ui/ assets the page loads ({len(rows)} files): {gz:,} bytes gzipped "
                  f"({gz / 1024:.1f} KiB, {100 * gz / (500 * 1024):.0f} % of the 500 KiB budget), "
                  f"{raw:,} bytes uncompressed")
            for p, n in rows:
                print(f"  {n:>8}  {p}")
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
