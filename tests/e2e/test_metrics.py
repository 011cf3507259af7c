"""`/metrics` (JSON) and `/metrics/prometheus` against the real binary: the original's shapes
and series (wire reference §7.6) and the live series of docs/metrics.md."""

from __future__ import annotations

import re

import httpx
from conftest import ADMIN_KEY, API_KEY

PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Wire reference §7.6: every one declared `# TYPE ... gauge` with a `# HELP`.
ORIGINAL_GAUGES = [
    "stacyvm_uptime_seconds", "stacyvm_runtime_goroutines",
    "stacyvm_runtime_memory_alloc_bytes", "stacyvm_runtime_memory_sys_bytes",
    "stacyvm_runtime_gc_cycles_total", "stacyvm_sandboxes_total",
    "stacyvm_sandboxes_by_provider_total", "stacyvm_sandboxes_by_worker_total",
    "stacyvm_provider_healthy", "stacyvm_provider_health_latency_milliseconds",
    "stacyvm_provider_runtime_sandboxes", "stacyvm_workers_total", "stacyvm_leases_total",
    "stacyvm_events_total", "stacyvm_event_subscribers", "stacyvm_event_history_size",
    "stacyvm_spawn_queue_depth", "stacyvm_spawn_queue_capacity",
    "stacyvm_spawn_queue_enqueued_total", "stacyvm_spawn_queue_dequeued_total",
    "stacyvm_spawn_queue_timeout_total", "stacyvm_spawn_queue_wait_milliseconds_sum",
    "stacyvm_spawn_queue_wait_milliseconds_count", "stacyvm_spawn_queue_wait_milliseconds_max",
    "stacyvm_owner_quotas_total", "stacyvm_owner_quota_overrides_total",
    "stacyvm_rate_limit_allowed_total", "stacyvm_rate_limit_blocked_total",
    "stacyvm_rate_limit_evicted_buckets_total", "stacyvm_rate_limit_active_buckets",
    "stacyvm_operation_success_total", "stacyvm_operation_failure_total",
    "stacyvm_operation_latency_milliseconds_sum", "stacyvm_operation_latency_milliseconds_count",
    "stacyvm_operation_latency_milliseconds_max",
]

METRICS_KEYS = {"uptime", "goroutines", "memory_alloc", "memory_sys", "memory_heap_alloc",
                "gc_cycles", "sandboxes", "providers", "workers", "leases", "events",
                "operations", "scheduler", "quotas", "rate_limit"}

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def samples(text: str) -> dict[str, float]:
    """`name{labels}` → value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def scrape(http, path="/api/v1/metrics/prometheus") -> str:
    r = http.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == PROM_TYPE
    return r.text


def test_metrics_json_shape(http, raw_sandbox):
    m = http.get("/api/v1/metrics").json()
    assert set(m) == METRICS_KEYS
    assert set(m["providers"]) == {"total", "healthy", "items"}
    assert m["sandboxes"]["by_state"].get("running", 0) >= 1
    assert any(o["operation"] == "spawn" and o["provider"] == "mock" for o in m["operations"])


def test_original_gauges_keep_names_types_and_labels(http, raw_sandbox):
    text = scrape(http)
    lines = text.splitlines()
    for name in ORIGINAL_GAUGES:
        assert any(l.startswith(f"# HELP {name} ") for l in lines), f"no HELP for {name}"
        assert f"# TYPE {name} gauge" in lines, f"{name} is not a gauge"
    s = samples(text)
    assert s['stacyvm_sandboxes_total{state="running"}'] >= 1
    assert s['stacyvm_provider_healthy{provider="mock",default="true"}'] == 1
    assert 'stacyvm_workers_total{status="online"}' in s
    assert 'stacyvm_owner_quota_overrides_total{type="max_ttl"}' in s
    assert s['stacyvm_operation_success_total{operation="spawn",provider="mock"}'] >= 1


def test_live_series_move_with_requests_spawns_and_execs(http):
    exec_route = 'route="/api/v1/sandboxes/{id}/exec"'
    req = 'stacyvm_http_request_duration_seconds_count{method="POST",%s,status_class="2xx"}'
    spawn = ('stacyvm_operation_duration_seconds_count'
             '{operation="spawn",provider="mock",outcome="ok"}')
    ok = 'stacyvm_exec_total{kind="sync",mode="shell",outcome="ok"}'
    nonzero = 'stacyvm_exec_total{kind="sync",mode="shell",outcome="exit_nonzero"}'
    before = samples(scrape(http))

    r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        for cmd, code in [("echo hi", 0), ("exit 3", 3)]:
            r = http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": cmd})
            assert r.status_code == 200 and r.json()["exit_code"] == code, r.text
        assert http.get("/api/v1/no-such-route").status_code == 404
        text = scrape(http)
    finally:
        http.delete(f"/api/v1/sandboxes/{sid}")

    after = samples(text)
    assert after[req % exec_route] - before.get(req % exec_route, 0) == 2
    assert after[spawn] - before.get(spawn, 0) == 1
    assert after[ok] - before[ok] == 1
    assert after[nonzero] - before[nonzero] == 1
    lines = text.splitlines()
    for family, kind in [("stacyvm_http_request_duration_seconds", "histogram"),
                         ("stacyvm_operation_duration_seconds", "histogram"),
                         ("stacyvm_exec_total", "counter"),
                         ("stacyvm_worker_rpc_duration_seconds", "histogram")]:
        assert f"# TYPE {family} {kind}" in lines, family
    # Routes are templates: no id, and a request no route matched is not recorded.
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert "/api/v1/sandboxes/{id}/exec" in routes
    assert not any("sb-" in r or "no-such-route" in r for r in routes), routes


def test_admin_and_api_key_scrapes(server_factory):
    srv = server_factory({"auth": {"api_key": API_KEY, "admin_api_key": ADMIN_KEY}}, "metrics")
    with srv.http(api_key=None) as c:
        assert c.get("/api/v1/metrics/prometheus").status_code == 401
    with httpx.Client(base_url=srv.base_url, headers={"X-Admin-API-Key": ADMIN_KEY}) as c:
        admin = scrape(c, "/api/v1/admin/metrics/prometheus")
    assert "# TYPE stacyvm_uptime_seconds gauge" in admin.splitlines()
    with srv.http() as c:
        text = scrape(c)
    # The 401 above is counted under its route, as a 4xx.
    series = ('stacyvm_http_request_duration_seconds_count'
              '{method="GET",route="/api/v1/metrics/prometheus",status_class="4xx"}')
    assert samples(text)[series] == 1
