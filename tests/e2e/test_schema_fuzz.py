"""Schema fuzzing (hardening harness): schemathesis generates requests from the OpenAPI document
the server itself serves and sends them to a live server, once per provider CI runs.

What must hold for every generated request (docs/threat-model.md, "Harness"):
- no 5xx answer (`not_a_server_error`);
- the status code, content type, headers and JSON body of every answer match the document
  (`status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`);
- no request hangs: each has `REQUEST_TIMEOUT` seconds, and a timeout fails the run.

Whether the document's request constraints match the server's to the letter (schemathesis's
`positive_data_acceptance` / `negative_data_rejection`) is not checked: the server validates
more than JSON Schema can say (durations, owner ids, paths), and answering 400 to such input
is the intended behaviour.

Bounded for CI: `STACYVM_FUZZ_EXAMPLES` examples per operation (default 12). A longer local
run: `STACYVM_FUZZ_EXAMPLES=500 pytest tests/e2e/test_schema_fuzz.py` (docs/testing.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import API_KEY, ADMIN_KEY, Server, require_backend

EXAMPLES = int(os.environ.get("STACYVM_FUZZ_EXAMPLES", "12"))
REQUEST_TIMEOUT = 20
DOCKER_IMAGE = "stacyvm-test/busybox:latest"

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])

AUTH = {
    "api_key": API_KEY,
    "admin_api_key": ADMIN_KEY,
    # With worker credentials configured the worker routes answer 401/403 to a wrong token
    # instead of 503 "not configured", so the fuzzer reaches their real checks.
    "worker_token": "fuzz-worker-token-0123456789abcdef",
    "worker_signing_key": "fuzz-signing-key-0123456789abcdef0123456789",
}

PROVIDERS = {
    "mock": {},
    "docker": {
        "providers": {"default": "docker",
                      "docker": {"enabled": True, "default_image": DOCKER_IMAGE}},
        "defaults": {"image": DOCKER_IMAGE},
    },
    # Guests boot under TCG here: few at a time, fewer examples (FEWER_EXAMPLES).
    "microvm": {
        "providers": {"default": "microvm", "microvm": {"enabled": True}},
        "defaults": {"image": DOCKER_IMAGE, "memory_mb": 256, "max_sandboxes": 3},
    },
}
BACKEND = {"docker": "docker", "microvm": "qemu"}
FEWER_EXAMPLES = {"microvm": max(2, EXAMPLES // 4)}

# /events (server-sent events) and a directory watch (NDJSON until the directory goes) stay
# open by design: a generated request to them would only ever end at the timeout.
EXCLUDED_PATHS = ["/events", "/sandboxes/{id}/files/watch"]


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "image", "inspect", DOCKER_IMAGE],
                          capture_output=True).returncode == 0


def _containers() -> set[str]:
    """Every container (running or not) that carries a StacyVM sandbox label."""
    out = subprocess.run(["docker", "ps", "-a", "-q", "--no-trunc", "--filter", "label=stacyvm.sandbox_id"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _ok_count(prometheus: str, series: str, **labels: str) -> float:
    """Sum of a Prometheus series' samples whose labels include `labels`."""
    total = 0.0
    for line in prometheus.splitlines():
        if line.startswith(series + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _st() -> str:
    st = Path(sys.executable).with_name("st")
    require_backend("schemathesis", st.exists(), "the e2e venv has no `st` (tests/e2e/requirements.txt)")
    return str(st)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("provider", [
    "mock",
    pytest.param("docker", marks=pytest.mark.backend("docker")),
    pytest.param("microvm", marks=pytest.mark.backend("qemu")),
])
def test_served_schema_holds_under_fuzzing(provider: str, server_factory, tmp_path: Path):
    if provider == "docker":
        require_backend("docker", _docker_ok(), f"docker daemon with image {DOCKER_IMAGE}")
        before = _containers()
    srv: Server = server_factory({"auth": AUTH, **PROVIDERS[provider]}, name=f"fuzz-{provider}")
    base = f"{srv.base_url}/api/v1"
    # The fixture really serves the document the fuzzer reads, with every route in it, and the
    # provider under test is the healthy default.
    with srv.http() as c:
        doc = c.get("/api/v1/openapi.json")
        assert doc.status_code == 200, doc.text
        assert len(doc.json()["paths"]) > 40
        health = {p["name"]: p for p in c.get("/api/v1/providers").json()}.get(provider, {})
        require_backend(BACKEND.get(provider, provider), bool(health.get("healthy")),
                        f"{provider} provider unhealthy: {health.get('error', 'not registered')}")
    cmd = [
        _st(), "run", f"{base}/openapi.json", "--url", base,
        "-H", f"X-API-Key: {API_KEY}", "-H", f"X-Admin-API-Key: {ADMIN_KEY}",
        "--checks", CHECKS,
        "--max-examples", str(FEWER_EXAMPLES.get(provider, EXAMPLES)),
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--seed", os.environ.get("STACYVM_FUZZ_SEED", "20261203"),
        "--no-color",
    ]
    for path in EXCLUDED_PATHS:
        cmd += ["--exclude-path", path]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                         timeout=840, env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    report = out.stdout + out.stderr
    (srv.dir / "schemathesis.txt").write_text(report)
    # The run really sent requests (a run that generated nothing proves nothing), and some of
    # them got through validation into real sandboxes and commands on this provider.
    assert "Test cases:" in report and " generated" in report, report[-4000:]
    assert out.returncode == 0, report[-12000:]
    with srv.http(api_key=ADMIN_KEY) as c:
        assert c.get("/api/v1/health").status_code == 200
        metrics = c.get("/api/v1/metrics/prometheus").text
        assert _ok_count(metrics, "stacyvm_operation_duration_seconds_count",
                         operation="spawn", provider=provider, outcome="ok") >= 1, metrics[-3000:]
        assert _ok_count(metrics, "stacyvm_exec_total") >= 1, metrics[-3000:]
        # Whatever the fuzzer left running is destroyed through the API, and with it every
        # runtime: fuzzed input must not leave an orphan behind.
        for sb in c.get("/api/v1/sandboxes").json():
            c.delete(f"/api/v1/sandboxes/{sb['id']}")
    if provider == "docker":
        left = _containers() - before
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = _containers() - before
        for cid in left:
            subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True)
        assert not left, f"containers left after destroying every sandbox: {left}"
