"""API-key auth, admin routes, CORS preflight and X-Request-ID."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
import stacyvm
from conftest import ADMIN_KEY, API_KEY, Server, assert_error

BOTH_KEYS = {"auth": {"api_key": API_KEY, "admin_api_key": ADMIN_KEY}}


@pytest.fixture(scope="module")
def auth_server(_clean_work_root):
    srv = Server(BOTH_KEYS, "auth").start()
    yield srv
    srv.stop()


def _raw(srv: Server, headers: dict | None = None) -> httpx.Client:
    return httpx.Client(base_url=srv.base_url, headers=headers or {}, timeout=30)


def test_sdk_without_key_is_unauthorized(auth_server, sdk_kind):
    client = auth_server.sdk(sdk_kind, api_key=None)
    try:
        for call in (client.spawn, client.list, client.health, lambda: client.get("sb-00000000")):
            with pytest.raises(stacyvm.StacyVMError) as ei:
                call()
            assert ei.value.code == "UNAUTHORIZED"
    finally:
        client.close()


def test_sdk_wrong_key_is_unauthorized(auth_server, sdk_kind):
    client = auth_server.sdk(sdk_kind, api_key="wrong-key")
    try:
        with pytest.raises(stacyvm.StacyVMError) as ei:
            client.spawn()
        assert ei.value.code == "UNAUTHORIZED"
    finally:
        client.close()


def test_sdk_with_key_works(auth_server, sdk_kind):
    client = auth_server.sdk(sdk_kind)
    try:
        with client.spawn() as sb:
            assert sb.exec("echo authed").stdout == "authed\n"
            sb.write_file("/workspace/a.txt", "a")
            assert sb.read_file("/workspace/a.txt") == "a"
            chunks = list(sb.exec_stream("echo s"))
            assert "".join(c.data for c in chunks if c.stream == "stdout") == "s\n"
    finally:
        client.close()


@pytest.mark.parametrize("headers", [
    {},
    {"X-API-Key": "nope"},
    {"X-Admin-API-Key": "nope"},
    {"Authorization": f"Bearer {API_KEY}"},  # API keys are only read from the key headers
])
@pytest.mark.parametrize("path", ["/api/v1/sandboxes", "/api/v1/health", "/api/v1/templates",
                                  "/api/v1/no-such-route", "/api/v1/admin/quotas"])
def test_raw_unauthorized(auth_server, headers, path):
    with _raw(auth_server, headers) as c:
        body = assert_error(c.get(path), 401, "UNAUTHORIZED", auth_server)
        assert body["message"] == "invalid or missing API key"


@pytest.mark.parametrize("headers", [{"X-API-Key": API_KEY}, {"X-Admin-API-Key": API_KEY},
                                     {"X-API-Key": ADMIN_KEY}, {"X-Admin-API-Key": ADMIN_KEY}])
def test_either_key_in_either_header(auth_server, headers):
    with _raw(auth_server, headers) as c:
        assert c.get("/api/v1/sandboxes").status_code == 200


def test_admin_route_needs_admin_key(auth_server):
    with _raw(auth_server, {"X-API-Key": API_KEY}) as c:
        body = assert_error(c.get("/api/v1/admin/quotas"), 403, "FORBIDDEN", auth_server)
        assert body["message"] == "admin API key required"
    with _raw(auth_server, {"X-Admin-API-Key": ADMIN_KEY}) as c:
        r = c.get("/api/v1/admin/quotas")
        assert r.status_code == 200, r.text
        assert isinstance(r.json(), list)
    with _raw(auth_server, {"X-API-Key": ADMIN_KEY}) as c:
        assert c.get("/api/v1/admin/quotas").status_code == 200


def test_admin_fallback_to_api_key(server_factory):
    srv = server_factory({"auth": {"api_key": API_KEY}}, name="fallback")
    with _raw(srv, {"X-API-Key": API_KEY}) as c:
        assert c.get("/api/v1/admin/quotas").status_code == 200
    with _raw(srv) as c:
        assert_error(c.get("/api/v1/admin/quotas"), 401, "UNAUTHORIZED", srv)


def test_admin_fallback_disabled(server_factory):
    srv = server_factory({"auth": {"api_key": API_KEY, "admin_fallback_enabled": False}},
                         name="no-fallback")
    with _raw(srv, {"X-API-Key": API_KEY}) as c:
        assert c.get("/api/v1/sandboxes").status_code == 200
        assert_error(c.get("/api/v1/admin/quotas"), 403, "FORBIDDEN", srv)


def test_no_auth_configured_is_open(http):
    assert http.get("/api/v1/admin/quotas").status_code == 200


# ----------------------------------------------------------------------------------------------
# CORS (DECISIONS: preflight answered before auth)
# ----------------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type,x-api-key"}


@pytest.mark.parametrize("path", ["/api/v1/sandboxes", "/api/v1/sandboxes/sb-00000000/exec",
                                  "/api/v1/health"])
def test_cors_preflight_without_key(auth_server, path):
    with _raw(auth_server) as c:
        r = c.options(path, headers=PREFLIGHT)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers.get("access-control-allow-origin") == "*"
    methods = {m.strip() for m in r.headers.get("access-control-allow-methods", "").split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods, methods
    allowed = {h.strip().lower() for h in r.headers.get("access-control-allow-headers", "").split(",")}
    assert {"content-type", "x-api-key", "x-admin-api-key", "x-request-id", "x-user-id",
            "authorization"} <= allowed, allowed


def test_cors_on_normal_response(server):
    with _raw(server, {"Origin": "http://example.test"}) as c:
        r = c.get("/api/v1/sandboxes")
    assert r.status_code == 200
    assert r.headers.get("access-control-allow-origin") == "*"


def test_cors_restricted_origins(server_factory):
    srv = server_factory({"server": {"cors_allowed_origins": ["http://good.test"]}}, name="cors")
    with _raw(srv) as c:
        ok = c.options("/api/v1/sandboxes", headers={**PREFLIGHT, "Origin": "http://good.test"})
        assert ok.status_code == 200
        assert ok.headers.get("access-control-allow-origin") == "http://good.test"
        assert "origin" in ok.headers.get("vary", "").lower()
        bad = c.options("/api/v1/sandboxes", headers={**PREFLIGHT, "Origin": "http://evil.test"})
        assert bad.status_code == 403
        assert bad.headers.get("access-control-allow-origin") is None


# ----------------------------------------------------------------------------------------------
# X-Request-ID
# ----------------------------------------------------------------------------------------------

UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


@pytest.mark.parametrize("path,status", [("/api/v1/health", 200),
                                         ("/api/v1/sandboxes/sb-00000000", 404)])
def test_request_id_echoed(http, path, status):
    rid = f"e2e-{uuid.uuid4()}"
    r = http.get(path, headers={"X-Request-ID": rid})
    assert r.status_code == status
    assert r.headers.get("x-request-id") == rid


def test_request_id_generated(http):
    a = http.get("/api/v1/health").headers.get("x-request-id", "")
    b = http.get("/api/v1/health").headers.get("x-request-id", "")
    assert re.match(UUID_RE, a), a
    assert re.match(UUID_RE, b) and a != b


def test_request_id_on_unauthorized(auth_server):
    with _raw(auth_server, {"X-Request-ID": "rid-401"}) as c:
        r = c.get("/api/v1/sandboxes")
    assert r.status_code == 401
    assert r.headers.get("x-request-id") == "rid-401"


@pytest.mark.parametrize("configured_server", [{"auth": {"worker_token": "e2e-worker-token-0123456789abcdef"}}],
                         indirect=True)
def test_rejected_worker_credentials_do_not_flood_the_log(configured_server):
    # Anyone who reaches the port can present a wrong worker token; the WARN line per rejection
    # is bounded (20 a minute), so 200 of them leave at most 20 lines, and the later line says
    # how many were held back.
    with httpx.Client(base_url=configured_server.base_url, timeout=10) as c:
        for i in range(200):
            r = c.post("/api/v1/worker/worker-x/heartbeat",
                       headers={"X-Worker-ID": "worker-x", "X-Worker-Token": f"wrong-{i}"},
                       json={"worker_id": "worker-x"})
            assert r.status_code == 401, r.text
    def rejected_lines():
        return [ln for ln in configured_server.log_path.read_text(errors="replace").splitlines()
                if "worker credential rejected" in ln]

    # The log is written asynchronously: wait for the lines to land, then for any stragglers.
    deadline = time.monotonic() + 10
    while not rejected_lines() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    lines = rejected_lines()
    assert 1 <= len(lines) <= 20, len(lines)


def test_audit_csv_never_exports_a_formula(server):
    # Hardening finding 7: a client-chosen user agent (or path) starting with `=` must reach the
    # CSV as text, not as a spreadsheet formula.
    evil = '=HYPERLINK("http://127.0.0.1/x","click")'
    with httpx.Client(base_url=server.base_url, timeout=10,
                      headers={"X-Admin-API-Key": ADMIN_KEY}) as c:
        assert c.get("/api/v1/admin/audit", headers={"User-Agent": evil}).status_code == 200
        r = c.get("/api/v1/admin/audit", params={"format": "csv", "limit": "50"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text[:200]
    rows = [ln for ln in r.text.splitlines() if "HYPERLINK" in ln]
    assert rows, r.text[:500]
    for ln in rows:
        assert ",=HYPERLINK" not in ln and ',"=HYPERLINK' not in ln, ln
        assert "'=HYPERLINK" in ln, ln


# ----------------------------------------------------------------------------------------------
# Hardening review (docs/threat-model.md): quota writes, audit of refused admin requests, rate
# limiter keyed on the credential, failed authentication throttled, trusted proxies only.
# ----------------------------------------------------------------------------------------------

def test_quota_writes_need_the_admin_key(auth_server):
    owner = f"q-{uuid.uuid4().hex[:8]}"
    with _raw(auth_server, {"X-API-Key": API_KEY, "X-User-ID": owner}) as c:
        body = assert_error(c.put(f"/api/v1/quotas/{owner}", json={"max_sandboxes": 1}),
                            403, "FORBIDDEN", auth_server)
        assert body["message"] == "admin API key required"
        assert c.get(f"/api/v1/quotas/{owner}").status_code == 404, "nothing was written"
    with _raw(auth_server, {"X-Admin-API-Key": ADMIN_KEY}) as c:
        r = c.put(f"/api/v1/quotas/{owner}", json={"max_sandboxes": 1})
        assert r.status_code == 200, r.text
    with _raw(auth_server, {"X-API-Key": API_KEY}) as c:
        # Reads keep the api class; deletes need the admin key too.
        assert c.get(f"/api/v1/quotas/{owner}").json()["max_sandboxes"] == 1
        assert_error(c.delete(f"/api/v1/quotas/{owner}"), 403, "FORBIDDEN", auth_server)
    with _raw(auth_server, {"X-Admin-API-Key": ADMIN_KEY}) as c:
        assert c.delete(f"/api/v1/quotas/{owner}").status_code == 200


def test_refused_admin_requests_are_audited_under_the_key(auth_server):
    agent = f"audit-probe-{uuid.uuid4().hex[:8]}"
    with _raw(auth_server, {"X-API-Key": API_KEY, "X-User-ID": "root", "User-Agent": agent}) as c:
        assert_error(c.get("/api/v1/admin/workers"), 403, "FORBIDDEN", auth_server)
    with _raw(auth_server, {"X-Admin-API-Key": "wrong", "X-User-ID": "root",
                            "User-Agent": agent}) as c:
        assert_error(c.get("/api/v1/admin/workers"), 401, "UNAUTHORIZED", auth_server)
    with _raw(auth_server, {"X-Admin-API-Key": ADMIN_KEY, "X-User-ID": "mallory",
                            "User-Agent": agent}) as c:
        assert c.get("/api/v1/admin/workers").status_code == 200
        rows = c.get("/api/v1/admin/audit", params={"limit": "500"}).json()
    mine = [(r["status"], r["actor"]) for r in reversed(rows) if r["user_agent"] == agent]
    assert mine == [(403, "api:X-API-Key"), (401, "anonymous"), (200, "admin:X-Admin-API-Key")]


def _rate_limited_server(server_factory, name: str, **extra) -> Server:
    # rpm 1: no token comes back during the test, so the counts are exact after startup.
    cfg = {"rate_limit": {"enabled": True, "requests_per_minute": 1, "burst": 4}}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    return server_factory(cfg, name=name)


def _assert_429(r: httpx.Response, srv: Server) -> None:
    body = assert_error(r, 429, "RESOURCE_LIMIT", srv)
    assert body["message"].startswith("rate limit exceeded; retry after ")
    assert int(r.headers["retry-after"]) >= 1


def test_a_fresh_user_id_per_request_is_still_rate_limited(server_factory):
    srv = _rate_limited_server(server_factory, "rl-owner", auth=BOTH_KEYS["auth"])
    statuses = []
    with _raw(srv, {"X-API-Key": API_KEY}) as c:
        for i in range(8):
            r = c.get("/api/v1/sandboxes", headers={"X-User-ID": f"u-{uuid.uuid4().hex}"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                _assert_429(r, srv)
            else:
                assert r.headers["x-ratelimit-limit"] == "4"
    assert statuses.count(429) >= 4, statuses


def test_wrong_keys_are_rate_limited_per_address(server_factory):
    srv = _rate_limited_server(server_factory, "rl-authfail", auth=BOTH_KEYS["auth"])
    statuses = []
    with _raw(srv) as c:
        for i in range(8):
            r = c.get("/api/v1/sandboxes", headers={"X-API-Key": f"guess-{i}"})
            statuses.append(r.status_code)
    assert statuses[:4] == [401] * 4 and statuses[4:] == [429] * 4, statuses
    with _raw(srv) as c:
        _assert_429(c.get("/api/v1/admin/workers", headers={"X-Admin-API-Key": "guess"}), srv)
    # The right key is not charged for the guesses.
    with _raw(srv, {"X-API-Key": API_KEY}) as c:
        assert c.get("/api/v1/sandboxes").status_code == 200


def _forwarded_statuses(srv: Server) -> list[int]:
    with _raw(srv) as c:
        return [c.get("/api/v1/sandboxes",
                      headers={"X-Forwarded-For": f"203.0.113.{i}",
                               "X-Real-IP": f"198.51.100.{i}"}).status_code
                for i in range(8)]


def test_forwarding_headers_are_ignored_from_untrusted_peers(server_factory):
    srv = _rate_limited_server(server_factory, "rl-xff", rate_limit={"key_by": "ip"})
    statuses = _forwarded_statuses(srv)
    assert statuses.count(429) >= 4, statuses


def test_forwarding_headers_count_from_trusted_proxies(server_factory):
    srv = _rate_limited_server(server_factory, "rl-proxy", rate_limit={"key_by": "ip"},
                               server={"trusted_proxies": ["127.0.0.1/32"]})
    assert _forwarded_statuses(srv) == [200] * 8


def test_client_chosen_ids_do_not_grow_the_bucket_map(server_factory):
    # The review sent 12,000 distinct 8 KB user ids and watched RSS grow 17 → 110 MB: each id
    # was a bucket. Now the bucket is the credential, so the map stays at one entry per key.
    srv = server_factory({"auth": BOTH_KEYS["auth"],
                          "rate_limit": {"enabled": True, "requests_per_minute": 100000,
                                         "burst": 100000}}, name="rl-map")
    with _raw(srv, {"X-API-Key": API_KEY}) as c:
        for i in range(2000):
            r = c.get("/api/v1/health", headers={"X-User-ID": f"{i}-" + "u" * 8000})
            assert r.status_code == 200, r.text
        rate = c.get("/api/v1/metrics").json()["rate_limit"]
    assert rate["active_buckets"] <= 3, rate
