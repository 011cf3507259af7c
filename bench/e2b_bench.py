#!/usr/bin/env python3
"""E2B-compatible API benchmark (issue 13, docs/e2b.md). A figure printer, not a test.

1. `commands.run("true")` through E2B's SDK against the native sync exec through StacyVM's SDK,
   on the SAME sandbox, interleaved (so machine noise hits all alike); p50/p90 and the ratio
   E2B/native (target ≤ 1.2×), literally and with the same command line (see exec_ratio).
2. `Sandbox.create()` to the first command's output, p50, per provider given (`--providers
   mock,docker,microvm`; docker needs the bash test image of tests/e2e/test_e2b_sdk.py, microvm
   its warm pool and an image with bash).

    cargo build --release -p stacyvm
    .venv/bin/python bench/e2b_bench.py --bin target/release/stacyvm --rounds 300

Mock provider, SQLite, loopback. Needs the e2e venv (e2b, stacyvm, httpx).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "e2b_" + secrets.token_hex(20)
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, workdir: Path, providers: list[str], docker_image: str,
                 microvm_image: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    templates = {}
    prov_cfg = {"default": "mock", "mock": {"enabled": True},
                "docker": {"enabled": "docker" in providers}}
    if "docker" in providers:
        templates["docker"] = {"image": docker_image, "provider": "docker"}
    if "microvm" in providers:
        prov_cfg["microvm"] = {"enabled": True, "warm_pool": 2}
        templates["microvm"] = {"image": microvm_image, "provider": "microvm"}
    agent = os.environ.get("STACYVM_AGENT") or str(
        REPO / "crates/stacyvm-agent/target/x86_64-unknown-linux-gnu/release/stacyvm-agent")
    import yaml  # the e2e venv has it

    cfg = {
        "server": {"host": "127.0.0.1", "port": port},
        "providers": prov_cfg,
        "auth": {"api_key": KEY},
        "database": {"driver": "sqlite", "path": str(workdir / "bench.db")},
        "processes": {"agent": agent},
        # Benchmarks measure the API, not the limiter.
        "rate_limit": {"enabled": False},
        "logging": {"level": "warn"},
        "e2b": {"templates": templates},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACYVM_")}
    env.update({"STACYVM_CONFIG": str(workdir / "config.yaml"), "TMPDIR": str(workdir)})
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1,
                         headers={"X-API-Key": KEY}).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("server did not start:\n" + (workdir / "server.log").read_text()[-2000:])


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def exec_ratio(url: str, rounds: int, template: str = "base") -> None:
    """Three interleaved series on one sandbox. The E2B SDK runs every command as
    `/bin/bash -l -c <cmd>` (a login shell: profile scripts), the native exec as `sh -c <cmd>`,
    so the literal comparison also measures bash's start-up; the third series runs the native
    exec with the E2B SDK's exact command line and isolates what the API path costs."""
    from e2b import Sandbox
    import stacyvm

    sbx = Sandbox.create(template=template, timeout=600)
    native = stacyvm.Client(base_url=url, api_key=KEY).get(sbx.sandbox_id)
    series = {
        "e2b SDK commands.run('true')": lambda: sbx.commands.run("true"),
        "stacyvm SDK exec('true')": lambda: native.exec("true"),
        # argv mode: exactly the SDK's argv, no `sh -c` around it.
        "stacyvm SDK exec(argv bash -l -c true)": lambda: native.exec(
            "/bin/bash", args=["-l", "-c", "true"], mode="argv"),
    }
    for _ in range(20):  # warm every path (connections, agent)
        for f in series.values():
            f()
    ms: dict[str, list[float]] = {k: [] for k in series}
    names = list(series)
    for i in range(rounds):
        # Rotate which goes first, so none always follows another.
        for k in names[i % 3:] + names[:i % 3]:
            t = time.perf_counter()
            r = series[k]()
            ms[k].append((time.perf_counter() - t) * 1000)
            assert r.exit_code == 0
    sbx.kill()
    print(f"exec, {rounds} interleaved rounds on one sandbox of template {template!r}:")
    for k, v in ms.items():
        print(f"  {k:41} p50 {statistics.median(v):7.3f} ms  p90 {pct(v, 0.9):7.3f} ms")
    e50 = statistics.median(ms[names[0]])
    print(f"  ratio e2b / native, literal               {e50 / statistics.median(ms[names[1]]):.3f}x"
          "  (target <= 1.2x)")
    print(f"  ratio e2b / native, same argv             {e50 / statistics.median(ms[names[2]]):.3f}x")


def create_to_first_output(template: str, rounds: int) -> None:
    from e2b import Sandbox

    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        s = Sandbox.create(template=template, timeout=120)
        out = s.commands.run("echo ready").stdout
        times.append((time.perf_counter() - t) * 1000)
        assert out == "ready\n", out
        s.kill()
    print(f"  create -> first output [{template:8}] p50 {statistics.median(times):8.1f} ms"
          f"  p90 {pct(times, 0.9):8.1f} ms  ({rounds} rounds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(REPO / "target/release/stacyvm"))
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--create-rounds", type=int, default=20)
    ap.add_argument("--providers", default="mock")
    ap.add_argument("--docker-image", default="stacyvm-test/e2b-bash:latest")
    ap.add_argument("--microvm-image", default="stacyvm-test/e2b-bash:latest")
    ap.add_argument("--exec-template", default="base",
                    help="template of the exec comparison: base (mock), docker or microvm")
    a = ap.parse_args()
    providers = [p for p in a.providers.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="e2b-bench-") as d:
        proc, port = start_server(str(Path(a.bin).resolve()), Path(d), providers, a.docker_image, a.microvm_image)
        url = f"http://127.0.0.1:{port}"
        os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=KEY,
                          E2B_DOMAIN="localhost")
        try:
            exec_ratio(url, a.rounds, a.exec_template)
            print("Sandbox.create() to the first command's output:")
            for p in providers:
                create_to_first_output("base" if p == "mock" else p, a.create_rounds)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
