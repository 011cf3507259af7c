"""Error classes the SDK raises, bad input rejection, DELETE semantics, unknown routes."""

from __future__ import annotations

import shutil

import pytest
import stacyvm
from conftest import SyncView, assert_error, sandbox_ids


def test_not_found_class(sdk):
    with pytest.raises(stacyvm.SandboxNotFound) as ei:
        sdk.get("sb-ffffffff")
    assert ei.value.code == "NOT_FOUND"


def _break_mock_tmpdir(srv) -> None:
    # The mock provider makes each sandbox a host temp dir under TMPDIR (wire §6). Turning the
    # server's TMPDIR into a regular file makes every later spawn fail on the host side.
    tmp = srv.dir / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")


def test_provider_error_for_5xx(server_factory, sdk_kind):
    srv = server_factory(name="broken-tmp")
    client = srv.sdk(sdk_kind)
    try:
        keep = client.spawn()
        _break_mock_tmpdir(srv)
        with pytest.raises(stacyvm.ProviderError) as ei:
            client.spawn()
        assert ei.value.code == "INTERNAL_ERROR", ei.value.code
        msg = str(ei.value)
        assert srv.host_tmp not in msg and "/tmp/stacyvm-" not in msg, msg
        # the failed spawn stored nothing; the existing sandbox is untouched
        assert [s.id for s in client.list()] == [keep.id]
    finally:
        client.close()


def test_provider_error_wire(server_factory):
    srv = server_factory(name="broken-tmp-wire")
    _break_mock_tmpdir(srv)
    with srv.http() as http:
        assert_error(http.post("/api/v1/sandboxes", json={}), 500, "INTERNAL_ERROR", srv)
        assert sandbox_ids(http) == set()


def test_error_with_code(sdk):
    with pytest.raises(stacyvm.StacyVMError) as ei:
        sdk.spawn(ttl="not-a-duration")
    assert type(ei.value) is stacyvm.StacyVMError
    assert ei.value.code == "BAD_REQUEST"


def test_unknown_provider_is_404(sdk, http, server):
    with pytest.raises(stacyvm.SandboxNotFound):
        sdk.spawn(provider="nope")
    body = assert_error(http.post("/api/v1/sandboxes", json={"provider": "nope"}),
                        404, "NOT_FOUND", server)
    assert "nope" in body["message"]


# ----------------------------------------------------------------------------------------------
# Bad input: 400 BAD_REQUEST and nothing stored changes
# ----------------------------------------------------------------------------------------------

BAD_SPAWN = [
    ("malformed", b'{"image": "alpine:latest"'),
    ("not-json", b"image=alpine"),
    ("empty", b""),
    ("array", b"[]"),
    ("wrong-type-memory", b'{"memory_mb": "big"}'),
    ("wrong-type-vcpus", b'{"vcpus": 1.5}'),
    ("negative-memory", b'{"memory_mb": -5}'),
    ("wrong-type-metadata", b'{"metadata": ["a"]}'),
    ("wrong-type-metadata-value", b'{"metadata": {"a": 1}}'),
    ("wrong-type-image", b'{"image": 7}'),
    ("bad-ttl", b'{"ttl": "forever"}'),
    ("bad-ttl-days", b'{"ttl": "1d"}'),
    ("bad-ttl-type", b'{"ttl": 300}'),
    ("bad-owner", b'{"owner_id": "a/b"}'),
]


@pytest.mark.parametrize("name,body", BAD_SPAWN, ids=[b[0] for b in BAD_SPAWN])
def test_spawn_bad_input(http, server, name, body):
    before = sandbox_ids(http)
    r = http.post("/api/v1/sandboxes", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "BAD_REQUEST", server)
    assert sandbox_ids(http) == before


def test_spawn_bad_owner_header(http, server):
    before = sandbox_ids(http)
    r = http.post("/api/v1/sandboxes", json={}, headers={"X-User-ID": "has space"})
    assert_error(r, 400, "BAD_REQUEST", server)
    assert sandbox_ids(http) == before


def test_spawn_ignores_unknown_keys(http):
    r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest", "unknown_key": {"x": 1}})
    assert r.status_code == 201, r.text
    http.delete(f"/api/v1/sandboxes/{r.json()['id']}")


@pytest.mark.parametrize("body", [b'{"command": "echo hi"', b"", b'{"command": ["echo"]}'])
def test_exec_bad_body_runs_nothing(http, raw_sandbox, server, body):
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec", content=body,
                  headers={"Content-Type": "application/json"})
    assert_error(r, 400, "BAD_REQUEST", server)


# ----------------------------------------------------------------------------------------------
# DELETE semantics (DECISIONS: idempotent for destroyed, 404 for never-existed)
# ----------------------------------------------------------------------------------------------

def test_delete_unknown_is_404(http, server):
    assert_error(http.delete("/api/v1/sandboxes/sb-0000dead"), 404, "NOT_FOUND", server)


def test_delete_twice_is_200_both(http):
    sid = http.post("/api/v1/sandboxes", json={}).json()["id"]
    for _ in range(2):
        r = http.delete(f"/api/v1/sandboxes/{sid}")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "destroyed"}


def test_sdk_destroy_twice(sdk):
    sb = sdk.spawn()
    sb.destroy()
    sb.destroy()
    with pytest.raises(stacyvm.SandboxNotFound):
        sdk.get(sb.id)


def test_sdk_destroy_unknown(sdk, sdk_kind):
    if sdk_kind == "sync":
        ghost = stacyvm.Sandbox(sdk._http, "sb-0000dead")
    else:
        ghost = SyncView(stacyvm.AsyncSandbox(sdk._target._http, "sb-0000dead"), sdk._bridge)
    with pytest.raises(stacyvm.SandboxNotFound):
        ghost.destroy()


# ----------------------------------------------------------------------------------------------
# Routing
# ----------------------------------------------------------------------------------------------

def test_unknown_route_404(http):
    r = http.get("/api/v1/definitely-not-a-route")
    assert r.status_code == 404


def test_wrong_method_405(http):
    r = http.put("/api/v1/sandboxes")
    assert r.status_code == 405


def test_error_body_is_compact_json_line(http):
    r = http.get("/api/v1/sandboxes/sb-ffffffff")
    assert r.status_code == 404
    assert r.text.endswith("\n") and "\n" not in r.text[:-1]


def test_exec_ws_without_an_upgrade_is_a_json_400(http, sdk):
    # Found by schema fuzzing: axum's own rejection answered text/plain.
    sb = sdk.spawn()
    r = http.get(f"/api/v1/sandboxes/{sb.id}/exec/ws")
    body = assert_error(r, 400, "BAD_REQUEST")
    assert "WebSocket upgrade is required" in body["message"], body
    # An unknown sandbox is still a 404 first, as before the upgrade.
    assert_error(http.get("/api/v1/sandboxes/sb-ffffffff/exec/ws"), 404, "NOT_FOUND")


def test_draining_a_worker_without_rpc_is_a_conflict(server_factory):
    # Found by schema fuzzing: a worker registered without `--listen` answered 503 to drain,
    # as if something were down; nothing is, the worker just cannot be reached by design.
    token = "e2e-worker-token-0123456789abcdef"
    srv = server_factory({"auth": {"worker_token": token}}, name="drain-no-rpc")
    with srv.http() as c:
        r = c.post("/api/v1/worker/w-norpc/heartbeat", json={"hostname": "h", "status": "online"},
                   headers={"X-Worker-ID": "w-norpc", "X-Worker-Token": token})
        assert r.status_code == 200, r.text
        body = assert_error(c.post("/api/v1/admin/workers/w-norpc/drain"), 409, "CONFLICT", srv)
        assert "--listen" in body["message"], body
        assert_error(c.post("/api/v1/admin/workers/local/drain"), 400, "BAD_REQUEST")
        assert_error(c.post("/api/v1/admin/workers/w-unknown/drain"), 404, "NOT_FOUND")
