"""The preview proxy in front of a microvm guest (docs/preview.md, docs/microvm.md): with
`network_mode: user` guest port 3000 is forwarded to a host loopback port at boot and any other
port the first time a preview asks for it, and the SDK's `get_preview_url(port)` reaches
busybox httpd in the guest through the control plane, with the sandbox's preview token. Needs
`scripts/setup-microvm.sh` assets."""

from __future__ import annotations

import time
from typing import Iterator

import httpx

import pytest
from conftest import Server, assert_error, require_backend
from test_preview import preview_get, preview_token

IMAGE = "stacyvm-test/busybox:latest"
CFG = {
    "providers": {"default": "microvm",
                  "microvm": {"enabled": True, "network_mode": "user"}},
    "defaults": {"image": IMAGE, "memory_mb": 256},
}

pytestmark = pytest.mark.backend("qemu")


@pytest.fixture(scope="module")
def nsrv(_clean_work_root) -> Iterator[Server]:
    srv = Server(CFG, "microvm-preview").start()
    with srv.http() as c:
        providers = {p["name"]: p for p in c.get("/api/v1/providers").json()}
    vm = providers.get("microvm", {})
    require_backend("qemu", bool(vm.get("healthy")),
                    f"microvm provider unhealthy: {vm.get('error', 'not registered')}")
    yield srv
    srv.stop()


def _wait(srv: Server, url: str, token: str) -> "httpx.Response":
    # QEMU accepts on the forwarded port before the guest listens, then closes: 502 until
    # httpd is up.
    deadline = time.monotonic() + 60
    while True:
        got = preview_get(srv, url, "/index.html", token)
        if got.status_code != 502 or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


@pytest.mark.timeout(300)
def test_preview_of_guest_ports_3000_and_8080(nsrv):
    client = nsrv.sdk("sync")
    try:
        sb = client.spawn(image=IMAGE, memory_mb=256, ttl="5m")
        try:
            token = preview_token(nsrv, sb.id)
            for port in (3000, 8080):
                r = sb.exec(f"mkdir -p /tmp/www{port} && "
                            f"echo \"preview of $(hostname) on {port}\" > /tmp/www{port}/index.html"
                            f" && httpd -p {port} -h /tmp/www{port}")
                assert r.exit_code == 0, r.stderr
                url = sb.get_preview_url(port)
                assert url == f"http://{port}-{sb.id}.localhost"
                got = _wait(nsrv, url, token)
                assert got.status_code == 200, got.text
                assert got.text == f"preview of {sb.id} on {port}\n"
                assert_error(preview_get(nsrv, url, "/index.html"), 401,
                             "PREVIEW_TOKEN_REQUIRED")
            # A port nothing listens on: forwarded, but nothing answers.
            got = preview_get(nsrv, sb.get_preview_url(9090), "/", token)
            assert_error(got, 502, "PREVIEW_UPSTREAM_UNREACHABLE")
        finally:
            sb.destroy()
    finally:
        client.close()
