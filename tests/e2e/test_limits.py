"""Limits: max_sandboxes (reject and queue), per-owner limits, max_ttl, exec timeouts."""

from __future__ import annotations

import threading
import time

import pytest
import stacyvm
from conftest import assert_error


def _expect_limit(fn):
    with pytest.raises(stacyvm.StacyVMError) as ei:
        fn()
    assert ei.value.code == "RESOURCE_LIMIT", (ei.value.code, str(ei.value))
    assert type(ei.value) is stacyvm.StacyVMError  # 429: base class, not ProviderError
    return ei.value


@pytest.mark.parametrize("configured_server", [{"defaults": {"max_sandboxes": 2}}], indirect=True)
def test_max_sandboxes_rejects(configured_server, sdk_kind):
    srv = configured_server
    client = srv.sdk(sdk_kind)
    try:
        a, b = client.spawn(), client.spawn()
        err = _expect_limit(client.spawn)
        assert "max sandboxes" in str(err)
        d = client.admission()
        assert (d.allowed, d.queueable, d.reason) == (False, False, "max_sandboxes")
        assert (d.active_sandboxes, d.max_sandboxes) == (2, 2)
        assert len(client.list()) == 2  # the refused spawn stored nothing
        a.destroy()
        c = client.spawn()
        assert c.state == "running"
        assert {s.id for s in client.list()} == {b.id, c.id}
    finally:
        client.close()


@pytest.mark.parametrize("configured_server", [{"defaults": {"max_sandboxes": 1}}], indirect=True)
def test_max_sandboxes_wire(configured_server):
    with configured_server.http() as http:
        assert http.post("/api/v1/sandboxes", json={}).status_code == 201
        assert_error(http.post("/api/v1/sandboxes", json={}), 429, "RESOURCE_LIMIT",
                     configured_server)


QUEUE_CFG = {"defaults": {"max_sandboxes": 1, "spawn_overflow": "queue",
                          "spawn_queue_timeout": "3s", "max_spawn_queue": 5}}


@pytest.mark.parametrize("configured_server", [QUEUE_CFG], indirect=True)
def test_queue_waits_for_capacity(configured_server):
    srv = configured_server
    client = srv.sync_client()
    try:
        first = client.spawn()
        d = client.admission()
        assert (d.allowed, d.queueable, d.reason) == (False, True, "max_sandboxes")

        result: dict = {}

        def queued_spawn():
            c = srv.sync_client()
            t0 = time.monotonic()
            try:
                result["sb"] = c.spawn()
            except Exception as e:  # reported below
                result["err"] = e
            result["waited"] = time.monotonic() - t0
            c.close()

        t = threading.Thread(target=queued_spawn)
        t.start()
        time.sleep(1.0)
        assert "sb" not in result and "err" not in result, "queued spawn did not wait"
        first.destroy()
        t.join(timeout=10)
        assert not t.is_alive()
        assert "err" not in result, result.get("err")
        assert result["sb"].state == "running"
        assert 0.8 <= result["waited"] < 3.0, result["waited"]
    finally:
        client.close()


@pytest.mark.parametrize("configured_server", [QUEUE_CFG], indirect=True)
def test_queue_timeout(configured_server, sdk_kind):
    client = configured_server.sdk(sdk_kind)
    try:
        client.spawn()
        t0 = time.monotonic()
        err = _expect_limit(client.spawn)
        waited = time.monotonic() - t0
        assert 2.5 <= waited < 8, waited
        assert "queue" in str(err)
    finally:
        client.close()


@pytest.mark.parametrize("configured_server", [
    {"defaults": {"max_sandboxes": 1, "spawn_overflow": "queue", "max_spawn_queue": 1,
                  "spawn_queue_timeout": "5s"}}], indirect=True)
def test_queue_full(configured_server):
    srv = configured_server
    with srv.http() as http:
        assert http.post("/api/v1/sandboxes", json={}).status_code == 201
        waiter = threading.Thread(target=lambda: srv.http().post("/api/v1/sandboxes", json={}))
        waiter.start()
        time.sleep(0.7)
        r = http.post("/api/v1/sandboxes", json={})
        body = assert_error(r, 429, "RESOURCE_LIMIT", srv)
        assert "queue full" in body["message"], body
        waiter.join(timeout=10)


@pytest.mark.parametrize("configured_server", [{"defaults": {"max_sandboxes_per_owner": 1}}],
                         indirect=True)
def test_per_owner_limit(configured_server, sdk_kind):
    srv = configured_server
    alice, bob = srv.sdk(sdk_kind, user_id="alice"), srv.sdk(sdk_kind, user_id="bob")
    try:
        sb = alice.spawn()
        _expect_limit(alice.spawn)
        assert bob.spawn().state == "running"
        d = alice.admission()
        assert (d.allowed, d.reason) == (False, "max_sandboxes_per_owner")
        assert (d.active_owner_sandboxes, d.max_owner_sandboxes) == (1, 1)
        sb.destroy()
        alice.spawn()
    finally:
        alice.close()
        bob.close()


def test_owner_quota_overrides_default(server_factory):
    srv = server_factory({"defaults": {"max_sandboxes_per_owner": 5}}, name="owner-quota")
    with srv.http() as http:
        assert http.put("/api/v1/quotas/carol", json={"max_sandboxes": 1}).status_code == 200
        usage = http.get("/api/v1/quotas/carol/usage").json()
        assert (usage["owner_id"], usage["max_sandboxes"], usage["quota_configured"]) == \
            ("carol", 1, True)
        h = {"X-User-ID": "carol"}
        r = http.post("/api/v1/sandboxes", json={}, headers=h)
        assert r.status_code == 201 and r.json()["owner_id"] == "carol", r.text
        assert_error(http.post("/api/v1/sandboxes", json={}, headers=h), 429, "RESOURCE_LIMIT")
        assert http.get("/api/v1/quotas/carol/usage").json()["active_sandboxes"] == 1


def test_max_ttl_on_spawn(sdk):
    _expect_limit(lambda: sdk.spawn(ttl="25h"))


@pytest.mark.parametrize("configured_server", [{"defaults": {"max_exec_timeout": "2s",
                                                             "default_exec_timeout": "1s"}}],
                         indirect=True)
def test_exec_timeouts_from_config(configured_server, sdk_kind):
    client = configured_server.sdk(sdk_kind)
    try:
        sb = client.spawn()
        _expect_limit(lambda: sb.exec("true", timeout="3s"))
        with pytest.raises(stacyvm.StacyVMError) as ei:
            sb.exec("sleep 5")  # default_exec_timeout applies
        assert ei.value.code == "TIMEOUT"
        assert sb.exec("echo ok", timeout="2s").stdout == "ok\n"
    finally:
        client.close()
