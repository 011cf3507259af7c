"""Health, providers, pool, quotas, admission, extend, prune and logs."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import httpx
import pytest
import stacyvm
from conftest import GO_DURATION_RE, assert_error, parse_time, sandbox_ids, ttl_seconds
from stacyvm.providers import ProviderManager

ADMISSION_KEYS = {"allowed", "queueable", "reason", "active_sandboxes", "max_sandboxes",
                  "active_owner_sandboxes", "max_owner_sandboxes", "max_ttl"}


def test_health(sdk):
    h = sdk.health()
    assert h["status"] == "ok"
    assert isinstance(h["version"], str) and h["version"]
    assert re.match(GO_DURATION_RE, h["uptime"]), h


def test_health_wire(http):
    r = http.get("/api/v1/health")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.text.endswith("\n")  # compact JSON + newline, like the original
    assert set(r.json()) == {"status", "version", "uptime"}


def test_providers(sdk):
    provs = sdk.providers()
    mock = [p for p in provs if p["name"] == "mock"]
    assert len(mock) == 1, provs
    p = mock[0]
    assert p["healthy"] is True
    assert p["default"] is True
    assert isinstance(p["latency_ms"], (int, float))
    parse_time(p["last_checked"])
    for cap in ("spawn", "exec", "exec_stream", "files", "console", "health", "test_provider"):
        assert cap in p["capabilities"], p


def test_provider_manager(server):
    client = server.sync_client()
    try:
        mgr = ProviderManager(client._http)
        assert "mock" in [p["name"] for p in mgr.list()]
        assert mgr.test() == {"mock": True}
    finally:
        client.close()


def test_provider_detail(http, server):
    r = http.get("/api/v1/providers/mock")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "mock" and body["healthy"] is True and body["default"] is True
    assert body["config"] == {"type": "mock"}
    assert_error(http.get("/api/v1/providers/nope"), 404, "NOT_FOUND", server)


def test_pool_status(sdk):
    assert sdk.pool_status() == {"enabled": False}


def test_quota_summary_exact_keys(sdk, http):
    summary = sdk.quota_summary()  # dataclass(**body): any extra key raises TypeError
    assert isinstance(summary, stacyvm.QuotaSummary)
    raw = http.get("/api/v1/quotas/summary").json()
    assert set(raw) == {"total", "with_max_sandboxes", "with_max_ttl", "with_max_exec_timeout"}
    assert all(isinstance(v, int) for v in raw.values())


def test_quota_summary_counts(server_factory):
    srv = server_factory(name="quotas")
    with srv.http() as http:
        assert http.get("/api/v1/quotas/summary").json() == {
            "total": 0, "with_max_sandboxes": 0, "with_max_ttl": 0, "with_max_exec_timeout": 0}
        r = http.put("/api/v1/quotas/alice", json={"max_sandboxes": 2, "max_ttl": "2h"})
        assert r.status_code == 200, r.text
        q = r.json()
        assert (q["owner_id"], q["max_sandboxes"], q["max_ttl"], q["max_exec_timeout"]) == \
            ("alice", 2, "2h0m0s", "0s")
        http.put("/api/v1/quotas/bob", json={"max_exec_timeout": "1m"})
        client = srv.sync_client()
        try:
            assert client.quota_summary() == stacyvm.QuotaSummary(
                total=2, with_max_sandboxes=1, with_max_ttl=1, with_max_exec_timeout=1)
        finally:
            client.close()


def test_admission_allowed(sdk, http):
    d = sdk.admission(image="alpine:latest", ttl="10m")
    assert isinstance(d, stacyvm.SpawnAdmissionDecision)
    assert d.allowed is True
    assert d.queueable is False
    assert d.max_sandboxes == 0
    raw = http.post("/api/v1/sandboxes/admission", json={"image": "alpine:latest"})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert set(body) <= ADMISSION_KEYS, f"keys the SDK cannot take: {set(body) - ADMISSION_KEYS}"
    assert {"allowed", "queueable", "active_sandboxes", "max_sandboxes"} <= set(body)


def test_admission_counts_active(server_factory, sdk_kind):
    srv = server_factory(name="admission")
    client = srv.sdk(sdk_kind)
    try:
        sbs = [client.spawn() for _ in range(2)]
        d = client.admission()
        assert d.active_sandboxes == 2
        sbs[0].destroy()
        assert client.admission().active_sandboxes == 1
    finally:
        client.close()


def test_admission_max_ttl(sdk):
    d = sdk.admission(ttl="48h")  # defaults.max_ttl 24h
    assert d.allowed is False
    assert d.queueable is False
    assert d.reason == "max_ttl"
    assert d.max_ttl == "24h0m0s"


@pytest.mark.parametrize("body", [{"ttl": "forever"}, {"ttl": 5}, {"owner_id": "a b"}])
def test_admission_bad_input(http, server, body):
    assert_error(http.post("/api/v1/sandboxes/admission", json=body), 400, "BAD_REQUEST", server)


def test_extend_ttl(sdk, http):
    sb = sdk.spawn(ttl="5m")
    try:
        sb.extend_ttl("2h")  # POST extend, then GET refresh
        raw = http.get(f"/api/v1/sandboxes/{sb.id}").json()
        remaining = (parse_time(raw["expires_at"]) - datetime.now(timezone.utc)).total_seconds()
        assert abs(remaining - 7200) < 10, raw
        assert sb._info["expires_at"] == raw["expires_at"]
    finally:
        sb.destroy()


def test_extend_wire(http, raw_sandbox, server):
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/extend", json={"ttl": "1h30m"})
    assert r.status_code == 200, r.text
    sb = r.json()
    assert sb["id"] == raw_sandbox
    remaining = (parse_time(sb["expires_at"]) - datetime.now(timezone.utc)).total_seconds()
    assert abs(remaining - 5400) < 10
    for body in ({}, {"ttl": ""}, {"ttl": "soon"}, {"ttl": "-5m"}, {"ttl": "0s"}, {"ttl": 30}):
        assert_error(http.post(f"/api/v1/sandboxes/{raw_sandbox}/extend", json=body),
                     400, "BAD_REQUEST", server)
    # DECISIONS: extend enforces max_ttl (24h by default).
    assert_error(http.post(f"/api/v1/sandboxes/{raw_sandbox}/extend", json={"ttl": "48h"}),
                 429, "RESOURCE_LIMIT", server)
    # nothing changed by the refused calls
    assert http.get(f"/api/v1/sandboxes/{raw_sandbox}").json()["expires_at"] == sb["expires_at"]
    assert_error(http.post("/api/v1/sandboxes/sb-0bad0bad/extend", json={"ttl": "1h"}),
                 404, "NOT_FOUND", server)


def test_prune(server_factory, sdk_kind):
    srv = server_factory(name="prune")
    client = srv.sdk(sdk_kind)
    try:
        keep = client.spawn(ttl="1h")
        doomed = [client.spawn(ttl="1s") for _ in range(2)]
        time.sleep(1.5)
        assert client.prune() == 2
        for sb in doomed:
            with pytest.raises(stacyvm.SandboxNotFound):
                client.get(sb.id)
        assert client.get(keep.id).state == "running"
        assert client.prune() == 0
    finally:
        client.close()


def test_prune_wire(http):
    r = http.delete("/api/v1/sandboxes")
    assert r.status_code == 200
    assert set(r.json()) == {"pruned"} and isinstance(r.json()["pruned"], int)


def test_zero_ttl_expires_immediately(server_factory):
    srv = server_factory(name="zero-ttl")
    with srv.http() as http:
        r = http.post("/api/v1/sandboxes", json={"ttl": "0s"})
        assert r.status_code == 201, r.text
        assert ttl_seconds(r.json()) < 1
        assert http.delete("/api/v1/sandboxes").json() == {"pruned": 1}
        assert r.json()["id"] not in sandbox_ids(http)


def test_logs(http, raw_sandbox):
    r = http.get(f"/api/v1/sandboxes/{raw_sandbox}/logs")
    assert r.status_code == 200, r.text
    lines = r.json()
    assert lines == [f"[INFO] mock sandbox {raw_sandbox} started",
                     "[INFO] workspace initialized at /workspace",
                     "[INFO] sandbox ready"]
    assert http.get(f"/api/v1/sandboxes/{raw_sandbox}/logs", params={"lines": 1}).json() == \
        ["[INFO] sandbox ready"]
    for bad in ("0", "-3", "many"):
        assert http.get(f"/api/v1/sandboxes/{raw_sandbox}/logs",
                        params={"lines": bad}).json() == lines


def test_logs_unknown(http, server):
    assert_error(http.get("/api/v1/sandboxes/sb-0bad1095/logs"), 404, "NOT_FOUND", server)


def test_stats_mock_unsupported(http, raw_sandbox):
    r = http.get(f"/api/v1/sandboxes/{raw_sandbox}/stats")
    assert r.status_code == 200
    assert r.json() == {"supported": False}


def test_half_open_connections_are_closed_and_do_not_starve_the_server(server, http):
    # Hardening finding 2: connections that never finish their request head used to stay open
    # for minutes. Now the head must arrive within 30 s (the keep-alive idle limit too), and
    # meanwhile the server keeps answering.
    import socket

    held = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            held.append(s)
        started = time.monotonic()
        assert http.get("/api/v1/health").status_code == 200
        spawned = http.post("/api/v1/sandboxes", json={})
        assert spawned.status_code in (200, 201), spawned.text
        http.delete(f"/api/v1/sandboxes/{spawned.json()['id']}")
        # The server closes each of them (EOF) within the head timeout.
        for s in held:
            s.settimeout(max(1.0, 45 - (time.monotonic() - started)))
            assert s.recv(1024) is not None  # returns b"" (or a 408 head) once closed
            try:
                while s.recv(1024):
                    pass
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 45
    finally:
        for s in held:
            s.close()


def test_an_answer_that_leaves_the_body_unread_says_connection_close(server):
    # Hardening finding 11: a request refused before its body was read (here a 404 for an
    # unknown route, body still arriving) must not leave a keep-alive connection that the
    # server then drops silently under the client's next request.
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /no-such-route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 200000\r\n\r\n" + b"x" * 1000)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
    status, *headers = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert " 404 " in status or " 401 " in status, status
    assert "connection: close" in [h.lower() for h in headers], headers


def test_refused_requests_with_bodies_never_break_a_reused_connection(server):
    # The same through a client that reuses its connection: every answer arrives.
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        for i in range(100):
            r = c.post("/api/v1/worker/w/heartbeat", json={"worker_id": "w", "pad": "p" * (i * 700)})
            assert r.status_code in (401, 403, 503), r.text
