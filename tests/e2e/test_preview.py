"""Preview URLs (docs/preview.md) through the official SDK's `get_preview_url(port)`: a server
started inside a sandbox answers through the control plane's built-in proxy, without an API
key. `*.localhost` does not resolve by DNS on every box, so requests go to the control plane's
address with the `Host` header taken from the preview URL."""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.parse
from typing import Iterator

import httpx
import pytest
from conftest import Server, assert_error, free_port

# The mock does not isolate (its ports are the host's), so its previews need opting in.
AUTH = {"auth": {"api_key": "preview-e2e-key-0123456789"},
        "server": {"preview_unisolated": True}}


def preview_get(srv: Server, url: str, path: str = "/", **kw) -> httpx.Response:
    """GET `path` of a preview URL, sent to the control plane with the URL's host."""
    host = urllib.parse.urlsplit(url).netloc
    return httpx.get(f"{srv.base_url}{path}", headers={"Host": host, **kw.pop("headers", {})},
                     timeout=kw.pop("timeout", 30), **kw)


def wait_for(srv: Server, url: str, path: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = preview_get(srv, url, path)
        if r.status_code != 502 or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


@pytest.fixture(scope="module")
def asrv(_clean_work_root) -> Iterator[Server]:
    """A server with an API key: previews must work without one."""
    srv = Server(AUTH, "preview").start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_preview_url_reaches_a_server_in_the_sandbox(asrv, kind):
    client = asrv.sdk(kind)
    pid = 0
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        try:
            port = free_port()
            url = sb.get_preview_url(port)
            assert url == f"http://{port}-{sb.id}.localhost"
            sb.write_file("/workspace/hello.txt", f"hello from {sb.id}\n")
            # Detached (own session, no inherited output pipes) so it outlives the exec, whose
            # process group the mock kills when the shell exits: the shell waits a moment so
            # `setsid` has left the group by then. The mock runs commands on the host, so the
            # server listens on the host's loopback.
            r = sb.exec(f"setsid {sys.executable} -m http.server {port} --bind 127.0.0.1 "
                        ">/dev/null 2>&1 & echo $!; sleep 1")
            assert r.exit_code == 0, r.stderr
            pid = int(r.stdout.strip())

            got = wait_for(asrv, url, "/hello.txt")
            assert got.status_code == 200, got.text
            assert got.text == f"hello from {sb.id}\n"
            # Same request with the API's usual port in the Host header.
            got = preview_get(asrv, url.replace(".localhost", ".localhost:7423"), "/hello.txt")
            assert got.status_code == 200, got.text
            missing = preview_get(asrv, url, "/nope.txt")
            assert missing.status_code == 404  # the sandbox server's own 404, passed through

            # The API on the same control plane still wants its key.
            with asrv.http(api_key=None) as raw:
                assert raw.get("/api/v1/sandboxes").status_code == 401
        finally:
            sb.destroy()
        # Destroyed: the preview is gone even though the host process still listens.
        gone = preview_get(asrv, url, "/hello.txt")
        assert_error(gone, 404, "NOT_FOUND")
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        client.close()


def test_preview_errors(asrv):
    client = asrv.sdk("sync")
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        try:
            closed = free_port()
            r = preview_get(asrv, sb.get_preview_url(closed))
            assert_error(r, 502, "PREVIEW_UPSTREAM_UNREACHABLE")
            assert "127.0.0.1" not in r.json()["message"]
        finally:
            sb.destroy()
        r = preview_get(asrv, "http://3000-sb-00000000.localhost")
        assert_error(r, 404, "NOT_FOUND")
    finally:
        client.close()


def test_preview_proxy_can_be_switched_off(server_factory):
    srv = server_factory({"server": {"preview_proxy": False}}, name="nopreview")
    client = srv.sdk("sync")
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        try:
            r = preview_get(srv, sb.get_preview_url(free_port()), "/api/v1/health")
            assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        finally:
            sb.destroy()
    finally:
        client.close()


def test_unisolated_previews_are_off_by_default(server_factory):
    """Without `server.preview_unisolated` a mock sandbox's preview does not reach the host's
    loopback services."""
    srv = server_factory({}, name="unisolated")
    client = srv.sdk("sync")
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        try:
            r = preview_get(srv, sb.get_preview_url(srv.port), "/api/v1/health")
            assert_error(r, 404, "PREVIEW_NOT_AVAILABLE")
            assert "preview_unisolated" in r.json()["message"]
        finally:
            sb.destroy()
    finally:
        client.close()
