"""Preview URLs (docs/preview.md) through the official SDK's `get_preview_url(port)`: a server
started inside a sandbox answers through the control plane's built-in proxy, without an API
key but with the sandbox's preview token (a header, or the cookie a first visit with
`?stacyvm_preview_token=` sets). On the mock, on a sandbox of a remote worker (bytes and a
WebSocket echo through control plane and worker), on docker and on bwrap (a port other than
3000). `*.localhost` does not resolve by DNS on every box, so requests go to the control
plane's address with the `Host` header taken from the preview URL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from typing import Iterator

import httpx
import pytest
from conftest import BIN, WORK_ROOT, Server, assert_error, free_port, require_backend
from test_remote_faults import TOKEN as WORKER_TOKEN
from test_remote_faults import Worker

# The mock does not isolate (its ports are the host's), so its previews need opting in.
AUTH = {"auth": {"api_key": "preview-e2e-key-0123456789"},
        "server": {"preview_unisolated": True}}
IMAGE = "stacyvm-test/busybox:latest"


def preview_get(srv: Server, url: str, path: str = "/", token: str | None = None,
                **kw) -> httpx.Response:
    """GET `path` of a preview URL, sent to the control plane with the URL's host (and the
    preview token in `X-Preview-Token` when given)."""
    host = urllib.parse.urlsplit(url).netloc
    headers = {"Host": host, **kw.pop("headers", {})}
    if token:
        headers["X-Preview-Token"] = token
    return httpx.get(f"{srv.base_url}{path}", headers=headers,
                     timeout=kw.pop("timeout", 30), **kw)


def wait_for(srv: Server, url: str, path: str, token: str | None,
             timeout: float = 20) -> httpx.Response:
    """The first answer that is not 502 (the server is not listening yet)."""
    deadline = time.monotonic() + timeout
    while True:
        r = preview_get(srv, url, path, token)
        if r.status_code != 502 or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def preview_token(srv: Server, sid: str) -> str:
    """The sandbox's preview token, as `GET /sandboxes/{id}` answers it to an API key holder."""
    with srv.http() as c:
        r = c.get(f"/api/v1/sandboxes/{sid}")
        assert r.status_code == 200, r.text
        token = r.json()["preview_token"]
    assert len(token) == 32, token
    return token


def kill(pid: int) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def start_detached(sb, command: str) -> int:
    """Runs `command` detached (own session, no inherited output pipes) so it outlives the
    exec, whose process group the mock kills when the shell exits: the shell waits a moment so
    `setsid` has left the group by then. The mock runs commands on the host, so servers listen
    on the host's loopback. Returns the pid."""
    r = sb.exec(f"setsid {command} >/dev/null 2>&1 & echo $!; sleep 1")
    assert r.exit_code == 0, r.stderr
    return int(r.stdout.strip())


@pytest.fixture(scope="module")
def asrv(_clean_work_root) -> Iterator[Server]:
    """A server with an API key: previews must work without one."""
    srv = Server(AUTH, "preview").start()
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------------------------
# Mock sandboxes on the control plane


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
            token = preview_token(asrv, sb.id)
            sb.write_file("/workspace/hello.txt", f"hello from {sb.id}\n")
            pid = start_detached(sb, f"{sys.executable} -m http.server {port} --bind 127.0.0.1")

            got = wait_for(asrv, url, "/hello.txt", token)
            assert got.status_code == 200, got.text
            assert got.text == f"hello from {sb.id}\n"
            # Same request with the API's usual port in the Host header, and E2B's header.
            got = preview_get(asrv, url.replace(".localhost", ".localhost:7423"), "/hello.txt",
                              headers={"e2b-traffic-access-token": token})
            assert got.status_code == 200, got.text
            missing = preview_get(asrv, url, "/nope.txt", token)
            assert missing.status_code == 404  # the sandbox server's own 404, passed through

            # The API on the same control plane still wants its key.
            with asrv.http(api_key=None) as raw:
                assert raw.get("/api/v1/sandboxes").status_code == 401
        finally:
            sb.destroy()
        # Destroyed: the preview is gone even though the host process still listens.
        gone = preview_get(asrv, url, "/hello.txt", token)
        assert_error(gone, 404, "NOT_FOUND")
    finally:
        kill(pid)
        client.close()


def test_preview_needs_the_token_and_a_browser_gets_a_cookie(asrv):
    """What a browser does: the URL with `?stacyvm_preview_token=` once, then the cookie."""
    client = asrv.sdk("sync")
    pid = 0
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        other = client.spawn(image="alpine:latest", ttl="5m")
        try:
            port = free_port()
            url = sb.get_preview_url(port)
            host = urllib.parse.urlsplit(url).netloc
            token = preview_token(asrv, sb.id)
            sb.write_file("/workspace/page.html", "<p>preview page</p>\n")
            pid = start_detached(sb, f"{sys.executable} -m http.server {port} --bind 127.0.0.1")
            assert wait_for(asrv, url, "/page.html", token).status_code == 200

            # Nothing without the token, nothing with another sandbox's.
            r = preview_get(asrv, url, "/page.html")
            assert_error(r, 401, "PREVIEW_TOKEN_REQUIRED")
            assert "stacyvm_preview_token" in r.json()["message"]
            r = preview_get(asrv, url, "/page.html", preview_token(asrv, other.id))
            assert_error(r, 403, "PREVIEW_TOKEN_INVALID")

            with httpx.Client(base_url=asrv.base_url, headers={"Host": host},
                              follow_redirects=False, timeout=30) as browser:
                first = browser.get(f"/page.html?x=1&stacyvm_preview_token={token}")
                assert first.status_code == 307, first.text
                assert first.headers["location"] == "/page.html?x=1"
                cookie = first.headers["set-cookie"]
                assert cookie == (f"stacyvm_preview_token={token}; Path=/; HttpOnly; "
                                  "SameSite=Lax"), cookie
                # httpx keeps cookies per domain; the Host header is not the URL's, so the
                # cookie is sent by hand as the browser would.
                then = browser.get("/page.html?x=1",
                                   headers={"Cookie": f"stacyvm_preview_token={token}"})
                assert then.status_code == 200, then.text
                assert then.text == "<p>preview page</p>\n"
                bad = browser.get("/page.html?stacyvm_preview_token=0000")
                assert_error(bad, 403, "PREVIEW_TOKEN_INVALID")
                assert "set-cookie" not in bad.headers
        finally:
            sb.destroy()
            other.destroy()
    finally:
        kill(pid)
        client.close()


def test_public_previews_need_no_token(asrv):
    pid = 0
    with asrv.http() as c:
        r = c.post("/api/v1/sandboxes", json={"image": "alpine:latest", "ttl": "5m",
                                               "public_preview": True})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["public_preview"] is True
        sid = body["id"]
    client = asrv.sdk("sync")
    try:
        sb = client.get(sid)
        port = free_port()
        sb.write_file("/workspace/open.txt", "open\n")
        pid = start_detached(sb, f"{sys.executable} -m http.server {port} --bind 127.0.0.1")
        r = wait_for(asrv, sb.get_preview_url(port), "/open.txt", None)
        assert r.status_code == 200 and r.text == "open\n", r.text
        sb.destroy()
    finally:
        kill(pid)
        client.close()


def test_preview_errors(asrv):
    client = asrv.sdk("sync")
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        try:
            closed = free_port()
            r = preview_get(asrv, sb.get_preview_url(closed), token=preview_token(asrv, sb.id))
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
            r = preview_get(srv, sb.get_preview_url(srv.port), "/api/v1/health",
                            preview_token(srv, sb.id))
            assert_error(r, 404, "PREVIEW_NOT_AVAILABLE")
            assert "preview_unisolated" in r.json()["message"]
        finally:
            sb.destroy()
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# A sandbox on a remote worker: the control plane forwards to the worker's preview route

WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1])) as server:
        await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def remote(_clean_work_root) -> Iterator[tuple[Server, Worker]]:
    """A control plane whose only worker is a real `stacyvm worker` (mock provider; both allow
    previews of the unisolated mock)."""
    cp = Server({"auth": {"worker_token": WORKER_TOKEN},
                 "server": {"preview_unisolated": True}}, "preview-remote").start()
    w = Worker(cp, config_extra={"server": {"preview_unisolated": True}}).start()
    with cp.http() as c:
        assert c.delete("/api/v1/admin/workers/local").status_code == 200
    yield cp, w
    w.stop()
    cp.stop()


def test_remote_preview_serves_bytes_and_a_websocket(remote):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    cp, w = remote
    client = cp.sdk("sync")
    pids: list[int] = []
    try:
        sb = client.spawn(image="alpine:latest", ttl="5m")
        try:
            with cp.http() as c:
                assert c.get(f"/api/v1/sandboxes/{sb.id}").json()["worker_id"] == w.id
            token = preview_token(cp, sb.id)
            http_port, ws_port = free_port(), free_port()
            payload = bytes(range(256)) * 64
            with cp.http() as c:
                r = c.put(f"/api/v1/sandboxes/{sb.id}/files",
                          params={"path": "/workspace/blob.bin"}, content=payload)
                assert r.status_code in (200, 201), r.text
            sb.write_file("/workspace/ws_echo.py", WS_ECHO)
            pids.append(start_detached(
                sb, f"{sys.executable} -m http.server {http_port} --bind 127.0.0.1"))
            pids.append(start_detached(sb, f"{sys.executable} ws_echo.py {ws_port}"))

            url = sb.get_preview_url(http_port)
            got = wait_for(cp, url, "/blob.bin", token)
            assert got.status_code == 200, got.text
            assert got.content == payload
            assert_error(preview_get(cp, url, "/blob.bin"), 401, "PREVIEW_TOKEN_REQUIRED")

            ws_host = urllib.parse.urlsplit(sb.get_preview_url(ws_port)).netloc
            deadline = time.monotonic() + 20
            while True:
                sock = socket.create_connection(("127.0.0.1", cp.port), timeout=10)
                try:
                    with connect(f"ws://{ws_host}/echo", sock=sock, open_timeout=10,
                                 additional_headers={"X-Preview-Token": token}) as ws:
                        for msg in ["hello through the worker", "x" * 100_000]:
                            ws.send(msg)
                            assert ws.recv(timeout=10) == msg
                        ws.send(b"\x00\x01binary")
                        assert ws.recv(timeout=10) == b"\x00\x01binary"
                    break
                except InvalidStatus as e:
                    # 502 until the echo server listens.
                    assert e.response.status_code == 502, e
                    assert time.monotonic() < deadline, "the WebSocket server never came up"
                    time.sleep(0.2)

            sock = socket.create_connection(("127.0.0.1", cp.port), timeout=10)
            with pytest.raises(InvalidStatus) as refused:
                connect(f"ws://{ws_host}/echo", sock=sock, open_timeout=10)
            assert refused.value.response.status_code == 401
        finally:
            sb.destroy()
        assert_error(preview_get(cp, url, "/blob.bin", token), 404, "NOT_FOUND")
    finally:
        for pid in pids:
            kill(pid)
        client.close()


# ---------------------------------------------------------------------------------------------
# Isolating providers: a port other than 3000


def _docker_image_ok() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "docker is not installed"
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if r.returncode != 0:
        return False, f"docker has no {IMAGE}"
    return True, ""


def _httpd_preview(srv: Server, port: int) -> None:
    """busybox httpd on `port` of a fresh sandbox, reached through its preview URL."""
    client = srv.sdk("sync")
    try:
        sb = client.spawn(image=IMAGE, ttl="5m")
        try:
            r = sb.exec(f"mkdir -p /tmp/www && echo \"preview of $(hostname) on {port}\" "
                        f"> /tmp/www/index.html && httpd -p {port} -h /tmp/www")
            assert r.exit_code == 0, r.stderr
            url = sb.get_preview_url(port)
            token = preview_token(srv, sb.id)
            got = wait_for(srv, url, "/index.html", token, timeout=30)
            assert got.status_code == 200, got.text
            assert got.text.startswith("preview of ") and got.text.endswith(f" on {port}\n")
            assert_error(preview_get(srv, url, "/index.html"), 401, "PREVIEW_TOKEN_REQUIRED")
            r = preview_get(srv, sb.get_preview_url(free_port()), token=token)
            assert_error(r, 502, "PREVIEW_UPSTREAM_UNREACHABLE")
        finally:
            sb.destroy()
    finally:
        client.close()


@pytest.mark.backend("docker")
def test_docker_preview_of_port_8080(server_factory):
    ok, why = _docker_image_ok()
    require_backend("docker", ok, why)
    srv = server_factory({
        "providers": {"default": "docker",
                      "docker": {"enabled": True, "default_image": IMAGE}},
        "defaults": {"image": IMAGE},
    }, name="docker-preview")
    _httpd_preview(srv, 8080)


@pytest.mark.backend("bwrap")
def test_bwrap_preview_of_port_8080_without_a_network(server_factory):
    """`network_mode: none` (only `lo`): the proxy connects from inside the sandbox's network
    namespace."""
    ok, why = _docker_image_ok()
    require_backend("bwrap", ok and shutil.which("bwrap") is not None,
                    why or "bubblewrap is not installed")
    root = WORK_ROOT / "bwrap-preview"
    images, data = root / "images", root / "data"
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), IMAGE], check=True,
                   capture_output=True)
    subprocess.run([str(BIN), "image", "--root", str(images), "import", str(archive)],
                   check=True, capture_output=True)
    srv = server_factory({
        "providers": {"default": "bwrap",
                      "bwrap": {"data_dir": str(data), "images_dir": str(images)}},
        "defaults": {"image": IMAGE},
    }, name="bwrap-preview")
    _httpd_preview(srv, 8080)
