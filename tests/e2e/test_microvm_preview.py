"""The preview proxy in front of a microvm guest (docs/preview.md, docs/microvm.md): with
`network_mode: user` guest port 3000 is forwarded to a host loopback port, and the SDK's
`get_preview_url(3000)` reaches busybox httpd in the guest through the control plane. Other
ports have no preview. Needs `scripts/setup-microvm.sh` assets."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from conftest import Server, assert_error, require_backend
from test_preview import preview_get

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


@pytest.mark.timeout(300)
def test_preview_of_guest_port_3000(nsrv):
    client = nsrv.sdk("sync")
    try:
        sb = client.spawn(image=IMAGE, memory_mb=256, ttl="5m")
        try:
            r = sb.exec("mkdir -p /tmp/www && echo \"preview of $(hostname)\" > /tmp/www/index.html"
                        " && httpd -p 3000 -h /tmp/www")
            assert r.exit_code == 0, r.stderr
            url = sb.get_preview_url(3000)
            assert url == f"http://3000-{sb.id}.localhost"
            # QEMU accepts on the forwarded port before the guest listens, then closes: 502
            # until httpd is up.
            deadline = time.monotonic() + 60
            while True:
                got = preview_get(nsrv, url, "/index.html")
                if got.status_code != 502 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert got.status_code == 200, got.text
            assert got.text == f"preview of {sb.id}\n"
            assert_error(preview_get(nsrv, sb.get_preview_url(8080)), 404, "PREVIEW_NOT_AVAILABLE")
        finally:
            sb.destroy()
    finally:
        client.close()
