"""Templates: TemplateManager (sync SDK only has one), spawn_template (sync and async)."""

from __future__ import annotations

import uuid

import pytest
import stacyvm
from conftest import assert_error, ttl_seconds
from stacyvm.templates import TemplateManager


def _name(prefix: str = "tpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def templates(server):
    client = server.sync_client()
    yield client.templates
    client.close()


def test_save_list_get_delete(templates):
    name = _name()
    saved = templates.save(stacyvm.Template(name=name, image="alpine:3.20", memory_mb=256, vcpus=2))
    assert (saved.name, saved.image, saved.memory_mb) == (name, "alpine:3.20", 256)
    assert name in [t.name for t in templates.list()]
    got = templates.get(name)
    assert (got.name, got.image, got.memory_mb) == (name, "alpine:3.20", 256)
    templates.delete(name)
    assert name not in [t.name for t in templates.list()]
    with pytest.raises(stacyvm.SandboxNotFound):  # the SDK maps every 404 to this class
        templates.get(name)


def test_list_is_sorted_by_name(templates):
    names = [_name("zz"), _name("aa"), _name("mm")]
    for n in names:
        templates.save(stacyvm.Template(name=n, image="alpine:latest"))
    try:
        listed = [t.name for t in templates.list()]
        assert listed == sorted(listed)
        assert set(names) <= set(listed)
    finally:
        for n in names:
            templates.delete(n)


def test_duplicate_save_conflicts(templates):
    name = _name()
    templates.save(stacyvm.Template(name=name, image="alpine:latest"))
    try:
        with pytest.raises(stacyvm.StacyVMError) as ei:
            templates.save(stacyvm.Template(name=name, image="alpine:latest"))
        assert ei.value.code == "CONFLICT"
        assert type(ei.value) is stacyvm.StacyVMError
    finally:
        templates.delete(name)


def test_raw_template_shape_and_defaults(http):
    name = _name()
    # SDK-style body: vcpus/ttl/provider/metadata are ignored by the server.
    r = http.post("/api/v1/templates", json={"name": name, "image": "alpine:latest",
                                             "vcpus": 4, "ttl": "2h", "provider": "mock",
                                             "metadata": {"a": "b"}})
    assert r.status_code == 201, r.text
    t = r.json()
    try:
        assert t["name"] == name and t["image"] == "alpine:latest"
        assert t["version"] == 1
        assert t["memory_mb"] == 512
        assert t["cpu_cores"] == 1
        assert t["ttl_seconds"] == 300
        for ignored in ("vcpus", "ttl", "provider", "metadata"):
            assert ignored not in t, t
        assert "created_at" in t and "updated_at" in t
        g = http.get(f"/api/v1/templates/{name}")
        assert g.status_code == 200 and g.json()["name"] == name
    finally:
        assert http.delete(f"/api/v1/templates/{name}").json() == {"status": "deleted"}


@pytest.mark.parametrize("body", [
    {"image": "alpine:latest"},
    {"name": "no-image-e2e"},
    {"name": 5, "image": "alpine:latest"},
])
def test_template_bad_input(http, server, body):
    before = http.get("/api/v1/templates").json()
    assert_error(http.post("/api/v1/templates", json=body), 400, "BAD_REQUEST", server)
    assert http.get("/api/v1/templates").json() == before


def test_delete_unknown_template(http, server):
    assert_error(http.delete(f"/api/v1/templates/{_name('ghost')}"), 404, "NOT_FOUND", server)


def test_spawn_template_without_body(server, sdk, http):
    name = _name()
    r = http.post("/api/v1/templates", json={"name": name, "image": "alpine:3.19",
                                             "memory_mb": 300, "cpu_cores": 2,
                                             "ttl_seconds": 120})
    assert r.status_code == 201, r.text
    try:
        sb = sdk.spawn_template(name)  # the SDK posts no body at all
        try:
            assert sb.state == "running"
            raw = http.get(f"/api/v1/sandboxes/{sb.id}").json()
            assert raw["image"] == "alpine:3.19"
            assert raw["memory_mb"] == 300
            assert raw["vcpus"] == 2
            assert raw["metadata"] == {"template": name}
            assert abs(ttl_seconds(raw) - 120) < 5
        finally:
            sb.destroy()
    finally:
        http.delete(f"/api/v1/templates/{name}")


def test_spawn_template_with_overrides(http):
    name = _name()
    http.post("/api/v1/templates", json={"name": name, "image": "alpine:latest"})
    try:
        r = http.post(f"/api/v1/templates/{name}/spawn", json={"ttl": "10m", "provider": "mock"})
        assert r.status_code == 201, r.text
        sb = r.json()
        assert abs(ttl_seconds(sb) - 600) < 5
        assert sb["provider"] == "mock"
        http.delete(f"/api/v1/sandboxes/{sb['id']}")
    finally:
        http.delete(f"/api/v1/templates/{name}")


def test_spawn_unknown_template(sdk):
    with pytest.raises(stacyvm.SandboxNotFound):
        sdk.spawn_template(_name("missing"))


def test_template_manager_on_raw_http(server):
    # TemplateManager works on any httpx.Client (that is how the SDK wires it).
    import httpx
    with httpx.Client(base_url=server.base_url, headers=server.headers()) as c:
        mgr = TemplateManager(c)
        name = _name()
        mgr.save(stacyvm.Template(name=name, image="alpine:latest"))
        assert mgr.get(name).image == "alpine:latest"
        mgr.delete(name)
