"""Sandbox lifecycle through the official SDK (sync and async) and the raw wire shape."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import stacyvm
from conftest import SANDBOX_ID_RE, assert_error, parse_time, sandbox_ids, ttl_seconds


def test_spawn_get_list_destroy(sdk):
    sb = sdk.spawn(image="alpine:latest")
    try:
        assert re.match(SANDBOX_ID_RE, sb.id), sb.id
        assert sb.state == "running"
        assert sb.provider == "mock"
        assert sb.image == "alpine:latest"

        got = sdk.get(sb.id)
        assert got.id == sb.id
        assert got.state == "running"

        listed = {info.id: info for info in sdk.list()}
        assert sb.id in listed
        info = listed[sb.id]
        assert (info.state, info.provider, info.image) == ("running", "mock", "alpine:latest")
        assert isinstance(info.memory_mb, int) and isinstance(info.vcpus, int)
    finally:
        sb.destroy()

    with pytest.raises(stacyvm.SandboxNotFound):
        sdk.get(sb.id)
    assert sb.id not in {info.id for info in sdk.list()}


def test_ids_are_unique(sdk):
    sbs = [sdk.spawn() for _ in range(3)]
    try:
        ids = [s.id for s in sbs]
        assert len(set(ids)) == 3, ids
        assert all(re.match(SANDBOX_ID_RE, i) for i in ids), ids
    finally:
        for s in sbs:
            s.destroy()


@pytest.mark.parametrize("missing", ["sb-nonexistent", "sb-00000000", "not-an-id"])
def test_get_unknown_raises_not_found(sdk, missing):
    with pytest.raises(stacyvm.SandboxNotFound):
        sdk.get(missing)


def test_context_manager_destroys(sdk):
    with sdk.spawn() as sb:
        sid = sb.id
        assert sdk.get(sid).state == "running"
    with pytest.raises(stacyvm.SandboxNotFound):
        sdk.get(sid)


def test_spawn_options_are_honoured(sdk):
    sb = sdk.spawn(image="python:3.12-slim", memory_mb=256, vcpus=2, ttl="10m",
                   metadata={"team": "e2e", "purpose": "options"})
    try:
        info = next(i for i in sdk.list() if i.id == sb.id)
        assert info.image == "python:3.12-slim"
        assert info.memory_mb == 256
        assert info.vcpus == 2
        assert info.metadata == {"team": "e2e", "purpose": "options"}
        assert abs((parse_time(info.expires_at) - parse_time(info.created_at)).total_seconds()
                   - 600) < 5
    finally:
        sb.destroy()


def test_spawn_refuses_an_unknown_template(sdk):
    # Hardening finding 9: the SDK may send `template`; the original accepted any text (30 MB
    # were stored) and ignored it. Now it must name a stored template.
    with pytest.raises(stacyvm.StacyVMError) as ei:
        sdk.spawn(template="does-not-exist")
    assert ei.value.code == "BAD_REQUEST"
    assert "unknown template" in str(ei.value)
    with pytest.raises(stacyvm.StacyVMError) as ei:
        sdk.spawn(template="t" * (1 << 20))
    assert ei.value.code == "BAD_REQUEST"


def test_spawn_with_a_stored_template(sdk, http):
    name = f"tpl-{uuid.uuid4().hex[:8]}"
    r = http.post("/api/v1/templates", json={"name": name, "image": "alpine:latest"})
    assert r.status_code == 201, r.text
    try:
        sb = sdk.spawn(template=name)
        try:
            assert sb.state == "running"
        finally:
            sb.destroy()
    finally:
        http.delete(f"/api/v1/templates/{name}")


def test_spawn_text_is_bounded(http):
    for body in ({"image": "i" * 600}, {"owner_id": "o" * 200},
                 {"metadata": {"k": "v" * 5000}}, {"metadata": {"k" * 300: "v"}}):
        r = http.post("/api/v1/sandboxes", json=body)
        assert r.status_code == 400, (body.keys(), r.status_code, r.text[:200])
        assert r.json()["code"] == "BAD_REQUEST"


def test_preview_url(sdk):
    with sdk.spawn() as sb:
        assert sb.get_preview_url(8080) == f"http://8080-{sb.id}.localhost"


def test_raw_sandbox_shape(http, server):
    r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest"})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    sb = r.json()
    try:
        for key in ("id", "state", "provider", "image", "memory_mb", "vcpus",
                    "created_at", "expires_at"):
            assert key in sb, (key, sb)
        assert sb["state"] == "running"
        assert sb["provider"] == "mock"
        assert sb["memory_mb"] == 1024  # defaults.memory_mb
        assert sb["vcpus"] == 1
        assert sb["worker_id"] == "local"
        assert sb["preview_domain"] == "localhost"
        assert "metadata" not in sb or sb["metadata"]  # omitted when empty
        assert abs(ttl_seconds(sb) - 1800) < 5  # defaults.ttl 30m

        g = http.get(f"/api/v1/sandboxes/{sb['id']}")
        assert g.status_code == 200
        assert g.json()["id"] == sb["id"]
        assert g.json()["expires_at"] == sb["expires_at"] or \
            abs((parse_time(g.json()["expires_at"]) - parse_time(sb["expires_at"]))
                .total_seconds()) < 1
    finally:
        assert http.delete(f"/api/v1/sandboxes/{sb['id']}").status_code == 200


def test_list_is_newest_first_and_excludes_destroyed(http):
    ids = []
    for _ in range(3):
        r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        time.sleep(0.05)
    try:
        listed = [s["id"] for s in http.get("/api/v1/sandboxes").json() if s["id"] in ids]
        assert listed == list(reversed(ids))
        http.delete(f"/api/v1/sandboxes/{ids[1]}")
        assert ids[1] not in sandbox_ids(http)
    finally:
        for sid in ids:
            http.delete(f"/api/v1/sandboxes/{sid}")


def test_trailing_slash_list(http, raw_sandbox):
    r = http.get("/api/v1/sandboxes/")
    assert r.status_code == 200, r.text
    assert raw_sandbox in {s["id"] for s in r.json()}


def test_destroyed_sandbox_rejects_exec_and_files(http, server):
    sid = http.post("/api/v1/sandboxes", json={}).json()["id"]
    assert http.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
    assert_error(http.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "true"}),
                 404, "NOT_FOUND", server)
    assert_error(http.get(f"/api/v1/sandboxes/{sid}/files", params={"path": "/workspace/x"}),
                 404, "NOT_FOUND", server)
    assert_error(http.get(f"/api/v1/sandboxes/{sid}/logs"), 404, "NOT_FOUND", server)
