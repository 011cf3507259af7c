"""The E2B-compatible API (docs/e2b.md) driven by E2B's own Python SDK (`e2b` from PyPI,
pinned in requirements.txt), unchanged, with only its environment variables pointing here.

The mock provider maps relative paths and a process's working directory into the sandbox;
absolute paths are the host's, so the files the SDK writes are checked through relative paths
(the docker test in this file checks absolute ones inside a real container).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from typing import Iterator

import httpx
import pytest
from conftest import Server, require_backend

e2b = pytest.importorskip("e2b")
from e2b import (  # noqa: E402
    AsyncSandbox,
    AuthenticationException,
    CommandExitException,
    NotFoundException,
    RateLimitException,
    Sandbox,
    SandboxQuery,
)

E2B_KEY = "e2b_" + secrets.token_hex(20)


def sdk_env(srv: Server, key: str = E2B_KEY) -> dict[str, str]:
    return {
        "E2B_API_URL": srv.base_url,
        "E2B_SANDBOX_URL": srv.base_url,
        "E2B_API_KEY": key,
        "E2B_DOMAIN": "localhost",
    }


@pytest.fixture(scope="module")
def esrv(_clean_work_root) -> Iterator[Server]:
    srv = Server({"auth": {"api_key": E2B_KEY}}, "e2b").start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _env(esrv, monkeypatch):
    for k, v in sdk_env(esrv).items():
        monkeypatch.setenv(k, v)


def native(srv: Server, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, srv.base_url + "/api/v1" + path,
                         headers={"X-API-Key": E2B_KEY}, timeout=30, **kw)


def destroyed(srv: Server, sid: str) -> bool:
    r = native(srv, "GET", f"/sandboxes/{sid}")
    return r.status_code == 404 or r.json().get("state") == "destroyed"


@pytest.fixture
def sbx(esrv) -> Iterator[Sandbox]:
    s = Sandbox.create(template="base", timeout=120, metadata={"suite": "e2b"}, envs={"FOO": "bar"})
    yield s
    try:
        s.kill()
    except Exception:  # noqa: BLE001 - already gone in the tests that kill it
        pass


# -- control plane ------------------------------------------------------------------------------

def test_create_answers_201_with_what_the_sdk_needs(esrv):
    r = httpx.post(esrv.base_url + "/sandboxes", headers={"X-API-Key": E2B_KEY},
                   json={"templateID": "base", "timeout": 60, "metadata": {"k": "v"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["templateID"] == "base" and body["sandboxID"].startswith("sb-")
    assert body["envdVersion"] == "0.5.7" and body["clientID"]
    assert len(body["envdAccessToken"]) == 40 and body["domain"] == "localhost"
    # The native API sees the same sandbox, with its metadata and a 60 s TTL.
    nat = native(esrv, "GET", f"/sandboxes/{body['sandboxID']}").json()
    assert nat["state"] == "running" and nat["metadata"] == {"k": "v"}
    assert httpx.delete(esrv.base_url + f"/sandboxes/{body['sandboxID']}",
                        headers={"X-API-Key": E2B_KEY}).status_code == 204
    assert destroyed(esrv, body["sandboxID"])


def test_traffic_access_token_is_the_preview_token(esrv):
    """`trafficAccessToken` (what E2B's SDK keeps as `traffic_access_token` and sends as
    `e2b-traffic-access-token` to preview hosts) is the sandbox's preview token
    (docs/preview.md); `network.allowPublicTraffic: true` makes previews public."""
    s = Sandbox.create(template="base", timeout=60)
    try:
        nat = native(esrv, "GET", f"/sandboxes/{s.sandbox_id}").json()
        assert s.traffic_access_token == nat["preview_token"]
        assert len(s.traffic_access_token) == 32 and "public_preview" not in nat
    finally:
        s.kill()
    r = httpx.post(esrv.base_url + "/sandboxes", headers={"X-API-Key": E2B_KEY},
                   json={"templateID": "base", "timeout": 60,
                         "network": {"allowPublicTraffic": True}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert "trafficAccessToken" not in body
    nat = native(esrv, "GET", f"/sandboxes/{body['sandboxID']}").json()
    assert nat["public_preview"] is True
    httpx.delete(esrv.base_url + f"/sandboxes/{body['sandboxID']}",
                 headers={"X-API-Key": E2B_KEY})


def test_unknown_template_route_and_key_answer_json(esrv):
    h = {"X-API-Key": E2B_KEY}
    r = httpx.post(esrv.base_url + "/sandboxes", headers=h, json={"templateID": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["message"] and r.json()["code"] == 404
    r = httpx.post(esrv.base_url + "/sandboxes/sb-x/snapshots", headers=h)
    assert r.status_code == 404 and r.json()["code"] == 404
    r = httpx.get(esrv.base_url + "/sandboxes/sb-missing", headers=h)
    assert r.status_code == 404 and "was not found" in r.json()["message"]
    r = httpx.get(esrv.base_url + "/v2/sandboxes", headers={"X-API-Key": "e2b_" + "0" * 40})
    assert r.status_code == 401 and r.json()["code"] == 401
    # Native routes keep their own shapes.
    assert native(esrv, "GET", "/sandboxes").status_code == 200


def test_bad_key_raises_authentication(esrv):
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "1" * 40)


def test_create_fails_cleanly_for_bad_env(esrv):
    before = len(native(esrv, "GET", "/sandboxes").json())
    r = httpx.post(esrv.base_url + "/sandboxes", headers={"X-API-Key": E2B_KEY},
                   json={"templateID": "base", "envVars": {"1BAD": "x"}})
    assert r.status_code == 400 and r.json()["code"] == 400
    assert len(native(esrv, "GET", "/sandboxes").json()) == before


def test_list_filters_by_metadata_and_pages(esrv):
    tag = secrets.token_hex(4)
    made = [Sandbox.create(timeout=120, metadata={"batch": tag, "i": str(i)}) for i in range(3)]
    try:
        ids = {s.sandbox_id for s in made}
        listed = Sandbox.list(query=SandboxQuery(metadata={"batch": tag}))
        seen = []
        while listed.has_next:
            seen += [i.sandbox_id for i in listed.next_items()]
        assert set(seen) == ids
        one = Sandbox.list(query=SandboxQuery(metadata={"batch": tag, "i": "1"}))
        assert [i.sandbox_id for i in one.next_items()] == [made[1].sandbox_id]
        odd = Sandbox.create(timeout=60, metadata={"batch": tag, "k y": "a b/c:ü%"})
        made.append(odd)
        got = Sandbox.list(query=SandboxQuery(metadata={"k y": "a b/c:ü%"})).next_items()
        assert [i.sandbox_id for i in got] == [odd.sandbox_id]
        ids.add(odd.sandbox_id)
        # Pages of one: X-Next-Token walks all three.
        r = httpx.get(esrv.base_url + "/v2/sandboxes", headers={"X-API-Key": E2B_KEY},
                      params={"metadata": f"batch={tag}", "limit": 1})
        assert r.status_code == 200 and len(r.json()) == 1 and r.headers.get("x-next-token")
        assert int(r.headers["x-total-running"]) >= 3
        got, token = [r.json()[0]["sandboxID"]], r.headers["x-next-token"]
        while token:
            r = httpx.get(esrv.base_url + "/v2/sandboxes", headers={"X-API-Key": E2B_KEY},
                          params={"metadata": f"batch={tag}", "limit": 1, "nextToken": token})
            got += [x["sandboxID"] for x in r.json()]
            token = r.headers.get("x-next-token")
        assert got == sorted(got, key=[s.sandbox_id for s in made].index) and set(got) == ids
    finally:
        for s in made:
            s.kill()


def test_timeout_info_connect_and_kill(sbx, esrv):
    before = Sandbox.get_info(sbx.sandbox_id)
    assert before.metadata == {"suite": "e2b"} and before.state.value == "running"
    sbx.set_timeout(30)
    after = Sandbox.get_info(sbx.sandbox_id)
    assert after.end_at < before.end_at
    sbx.files.write("c.txt", "connected")
    s2 = Sandbox.connect(sbx.sandbox_id)
    assert s2.commands.run("cat c.txt").stdout == "connected"
    assert sbx.is_running() is True
    assert sbx.kill() is True
    assert sbx.is_running() is False
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_pause_and_connect_resumes_with_processes(sbx, esrv):
    h = sbx.commands.run("sleep 300", background=True, timeout=0)
    sbx.pause()
    assert native(esrv, "GET", f"/sandboxes/{sbx.sandbox_id}").json()["state"] == "paused"
    assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
    s2 = Sandbox.connect(sbx.sandbox_id, timeout=120)
    assert native(esrv, "GET", f"/sandboxes/{sbx.sandbox_id}").json()["state"] == "running"
    assert h.pid in [p.pid for p in s2.commands.list()]
    assert s2.commands.run("echo back").stdout == "back\n"


# -- data plane: commands -----------------------------------------------------------------------

def test_commands_run_with_env_streams_and_exit_codes(sbx):
    r = sbx.commands.run("echo hi; echo err >&2; echo $FOO")
    assert (r.stdout, r.stderr, r.exit_code) == ("hi\nbar\n", "err\n", 0)
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo out; exit 3")
    assert e.value.exit_code == 3 and e.value.stdout == "out\n"
    r = sbx.commands.run("echo $FOO-$BAR", envs={"FOO": "over", "BAR": "b"})
    assert r.stdout == "over-b\n"
    chunks: list[str] = []
    sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=chunks.append)
    assert "".join(chunks) == "1\n2\n3\n"


def test_background_list_kill_and_native_view(sbx, esrv):
    h = sbx.commands.run("sleep 1; echo bg", background=True)
    assert h.pid > 0
    assert h.wait().stdout == "bg\n"
    long = sbx.commands.run("sleep 30", background=True, timeout=0)
    assert long.pid in [p.pid for p in sbx.commands.list()]
    # The same process, through the native API: one process model.
    procs = native(esrv, "GET", f"/sandboxes/{sbx.sandbox_id}/processes").json()
    assert any(p["pid"] == long.pid and p["state"] == "running" for p in procs)
    assert sbx.commands.kill(long.pid) is True
    with pytest.raises(CommandExitException):
        long.wait()
    p = native(esrv, "GET", f"/sandboxes/{sbx.sandbox_id}/processes/{long.pid}").json()
    assert p["state"] == "exited" and p["signal"] == "KILL"
    assert sbx.commands.kill(999999) is False


def test_stdin_close_and_reattach(sbx, esrv):
    h = sbx.commands.run("cat", background=True, stdin=True, timeout=0)
    sbx.commands.send_stdin(h.pid, "one\n")
    # A re-attached handle sees output from the moment it attaches: wait until cat's echo of
    # "one" is out (the native view's next_seq counts output bytes) before attaching.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        p = native(esrv, "GET", f"/sandboxes/{sbx.sandbox_id}/processes/{h.pid}").json()
        if p["next_seq"] >= 4:
            break
        time.sleep(0.02)
    again = sbx.commands.connect(h.pid)
    sbx.commands.send_stdin(h.pid, "two\n")
    sbx.commands.close_stdin(h.pid)
    assert again.wait().stdout == "two\n"
    assert h.wait().stdout == "one\ntwo\n"


def test_native_process_is_attachable_through_e2b(sbx, esrv):
    r = native(esrv, "POST", f"/sandboxes/{sbx.sandbox_id}/processes",
               json={"command": "sleep 1; echo native", "tag": "n1"})
    assert r.status_code == 201, r.text
    h = sbx.commands.connect(r.json()["pid"])
    assert h.wait().stdout == "native\n"


def test_command_timeout_kills_the_process(sbx):
    t0 = time.monotonic()
    with pytest.raises(Exception):
        sbx.commands.run("sleep 30", timeout=2)
    assert time.monotonic() - t0 < 20
    # The call's deadline is the process's lifetime (envd's rule): it is killed on the server,
    # not only abandoned by the client.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not [p for p in sbx.commands.list() if "sleep 30" in " ".join(p.args)]:
            break
        time.sleep(0.2)
    assert not [p for p in sbx.commands.list() if "sleep 30" in " ".join(p.args)]
    assert time.monotonic() - t0 < 15


def test_pty_resize_input_and_ctrl_c(sbx):
    import threading

    out = bytearray()
    term = sbx.pty.create(size=e2b.PtySize(rows=24, cols=80), timeout=0)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(term.wait(on_pty=out.extend)))
    reader.start()

    def until(marker: bytes) -> None:
        deadline = time.monotonic() + 15
        while marker not in out and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker in out, bytes(out)

    sbx.pty.resize(term.pid, e2b.PtySize(rows=40, cols=132))
    sbx.pty.send_stdin(term.pid, b"stty size; echo mark-$((6*7))\n")
    until(b"mark-42")
    assert b"40 132" in out
    # ^C reaches the foreground job through the terminal: sleep ends, the shell goes on.
    sbx.pty.send_stdin(term.pid, b"sleep 100\n")
    time.sleep(0.5)
    sbx.pty.send_stdin(term.pid, b"\x03")
    sbx.pty.send_stdin(term.pid, b"echo after-$((1+1))\n")
    until(b"after-2")
    sbx.pty.send_stdin(term.pid, b"exit\n")
    reader.join(15)
    assert not reader.is_alive() and result and result[0].exit_code == 0


# -- data plane: files --------------------------------------------------------------------------

def test_files_round_trip_text_and_bytes(sbx):
    sbx.files.write("a.txt", "hello")
    assert sbx.files.read("a.txt") == "hello"
    data = bytes(range(256)) + b"\x00\xff\xfe"
    sbx.files.write("bin/b.bin", data)
    assert sbx.files.read("bin/b.bin", format="bytes") == data
    assert sbx.commands.run("wc -c < bin/b.bin").stdout.strip() == str(len(data))
    big = os.urandom(3 << 20)
    sbx.files.write("big.bin", big)
    assert bytes(sbx.files.read("big.bin", format="bytes")) == big


def test_files_list_stat_mkdir_rename_remove(sbx):
    sbx.files.write("d1/x.txt", "x")
    names = {e.name for e in sbx.files.list(".")}
    assert {"d1"} <= names
    deep = {e.path.rsplit("/", 1)[-1] for e in sbx.files.list(".", depth=2)}
    assert "x.txt" in deep
    info = sbx.files.get_info("d1/x.txt")
    assert info.size == 1 and info.type.value == "file" and info.name == "x.txt"
    assert sbx.files.exists("d1/x.txt") and not sbx.files.exists("d1/none")
    assert sbx.files.make_dir("d2/e") is True
    assert sbx.files.make_dir("d2/e") is False
    assert sbx.files.get_info("d2/e").type.value == "dir"
    sbx.files.rename("d1/x.txt", "d2/e/y.txt")
    assert sbx.commands.run("cat d2/e/y.txt").stdout == "x"
    sbx.files.remove("d2")
    assert not sbx.files.exists("d2")
    with pytest.raises(NotFoundException):
        sbx.files.read("missing.txt")


def test_data_plane_needs_the_access_token(sbx, esrv):
    url = esrv.base_url + "/process.Process/List"
    base = {"E2b-Sandbox-Id": sbx.sandbox_id, "Content-Type": "application/json"}
    assert httpx.post(url, headers=base, content=b"{}").status_code == 401
    wrong = dict(base, **{"X-Access-Token": "0" * 40})
    assert httpx.post(url, headers=wrong, content=b"{}").status_code == 401
    ok = dict(base, **{"X-Access-Token": sbx._envd_access_token})
    assert httpx.post(url, headers=ok, content=b"{}").status_code == 200
    # Health needs no token; internal envd paths are not served.
    assert httpx.get(esrv.base_url + "/health", headers=base).status_code == 204
    assert httpx.post(esrv.base_url + "/init", headers=ok, json={}).status_code == 404
    gone = {"E2b-Sandbox-Id": "sb-nothere"}
    assert httpx.get(esrv.base_url + "/health", headers=gone).status_code == 502


def test_data_plane_is_rate_limited(server_factory, monkeypatch):
    """The data plane counts against the same limiter as the native API: calls with the
    sandbox's token in that sandbox's bucket, wrong tokens as failed authentications."""
    srv = server_factory({"auth": {"api_key": E2B_KEY},
                          # One token a minute: none comes back while the test runs, however
                          # slow the machine (the key's bucket needs 3: create, get, kill).
                          "rate_limit": {"enabled": True, "requests_per_minute": 1, "burst": 5}},
                         name="e2b-rate")
    for k, v in sdk_env(srv).items():
        monkeypatch.setenv(k, v)
    s = Sandbox.create(timeout=120)
    url = srv.base_url + "/filesystem.Filesystem/ListDir"
    base = {"E2b-Sandbox-Id": s.sandbox_id, "Content-Type": "application/json"}
    ok = dict(base, **{"X-Access-Token": s._envd_access_token})
    codes = [httpx.post(url, headers=ok, json={"path": "/"}).status_code for _ in range(12)]
    assert codes[0] == 200 and 429 in codes, codes
    limited = httpx.post(url, headers=ok, json={"path": "/"})
    assert limited.status_code == 429
    assert limited.json()["code"] == "resource_exhausted"
    assert int(limited.headers["retry-after"]) >= 1
    with pytest.raises(RateLimitException):
        s.files.list("/")
    # Guessing tokens is throttled per address, separately.
    wrong = dict(base, **{"X-Access-Token": "0" * 40})
    codes = [httpx.post(url, headers=wrong, json={"path": "/"}).status_code for _ in range(12)]
    assert codes[0] == 401 and codes[-1] == 429, codes
    # The key's own bucket was not spent by the sandbox's calls: the control plane answers.
    assert native(srv, "GET", f"/sandboxes/{s.sandbox_id}").status_code == 200
    assert s.kill() is True


def test_watch_dir_polling_sync(sbx):
    """The sync SDK's polling watchers, backed by inotify in the sandbox's agent."""
    sbx.files.make_dir("w")
    h = sbx.files.watch_dir("w", recursive=True)
    try:
        sbx.files.write("w/a.txt", "1")
        sbx.commands.run("mkdir w/sub && echo x > w/sub/b.txt && chmod 600 w/a.txt "
                         "&& mv w/a.txt w/c.txt && rm w/c.txt")
        seen: list = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen += h.get_new_events()
            kinds = {(e.name, e.type.name) for e in seen}
            if ("c.txt", "REMOVE") in kinds and ("sub/b.txt", "CREATE") in kinds:
                break
            time.sleep(0.2)
        kinds = {(e.name, e.type.name) for e in seen}
        for want in [("a.txt", "CREATE"), ("a.txt", "WRITE"), ("sub", "CREATE"),
                     ("sub/b.txt", "CREATE"), ("a.txt", "CHMOD"), ("a.txt", "RENAME"),
                     ("c.txt", "CREATE"), ("c.txt", "REMOVE")]:
            assert want in kinds, (want, sorted(kinds))
    finally:
        h.stop()
    with pytest.raises(Exception):
        h.get_new_events()  # removed: the server no longer knows it


def test_watch_dir_stream_async(esrv):
    async def flow():
        s = await AsyncSandbox.create(timeout=120)
        got: list = []
        try:
            await s.files.make_dir("aw")
            h = await s.files.watch_dir("aw", on_event=got.append, timeout=0)
            await s.files.write("aw/x.txt", "hi")
            deadline = time.monotonic() + 10
            while not any(e.name == "x.txt" and e.type.name == "WRITE" for e in got):
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.1)
            await h.stop()
            with pytest.raises(NotFoundException):
                await s.files.watch_dir("nope-dir", on_event=got.append)
        finally:
            await s.kill()

    asyncio.run(flow())


# -- async SDK ----------------------------------------------------------------------------------

def test_async_sdk_core_flow(esrv):
    async def flow():
        s = await AsyncSandbox.create(timeout=120, envs={"FOO": "async"})
        try:
            r = await s.commands.run("echo $FOO")
            assert r.stdout == "async\n"
            h = await s.commands.run("sleep 1; echo later", background=True)
            assert (await h.wait()).stdout == "later\n"
            await s.files.write("z.bin", b"\x00\x01\xff")
            assert await s.files.read("z.bin", format="bytes") == b"\x00\x01\xff"
            assert "z.bin" in [e.name for e in await s.files.list(".")]
            with pytest.raises(CommandExitException):
                await s.commands.run("exit 7")
            assert await s.is_running()
        finally:
            assert await s.kill() is True
        assert not await s.is_running()
        return s.sandbox_id

    sid = asyncio.run(flow())
    assert destroyed(esrv, sid)


# -- docker: a real container, absolute paths -----------------------------------------------------

# The tag names the image's content: a change to the build below needs a new tag, or a
# machine that built the old image keeps it.
BASH_IMAGE = "stacyvm-test/e2b-bash:user-1"


def _bash_image() -> tuple[bool, str]:
    """busybox with the host's /bin/bash and its libraries (every E2B command is
    `/bin/bash -l -c …`, and no registry is reachable to pull an image that has one), and
    E2B's account `user` (uid 1000, home /home/user)."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return False, "docker is not running"
    if subprocess.run(["docker", "image", "inspect", BASH_IMAGE], capture_output=True).returncode == 0:
        return True, ""
    script = r"""
set -e
ctx=$(mktemp -d)
mkdir -p "$ctx/root"
cid=$(docker create stacyvm-test/busybox:latest)
docker export "$cid" | tar -C "$ctx/root" -xf -
docker rm "$cid" >/dev/null
rm -f "$ctx/root/bin/bash"
cp -L /bin/bash "$ctx/root/bin/bash"
for lib in $(ldd /bin/bash | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/root$(dirname "$lib")"; cp -L "$lib" "$ctx/root$lib"
done
echo 'user:x:1000:1000:user:/home/user:/bin/bash' >>"$ctx/root/etc/passwd"
echo 'user:x:1000:' >>"$ctx/root/etc/group"
mkdir -p "$ctx/root/home/user"
chown 1000:1000 "$ctx/root/home/user"
tar -C "$ctx/root" -cf - . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$1" >/dev/null
rm -rf "$ctx"
"""
    r = subprocess.run(["bash", "-c", script, "_", BASH_IMAGE], capture_output=True, text=True)
    return r.returncode == 0, r.stderr[-500:]


@pytest.fixture(scope="module")
def dsrv(_clean_work_root) -> Iterator[Server]:
    ok, why = _bash_image()
    require_backend("docker", ok, why)
    srv = Server({
        "auth": {"api_key": E2B_KEY},
        # Switching users and giving files away needs these back (docs/e2b.md, "Users").
        "providers": {"default": "docker", "docker": {
            "enabled": True,
            "added_caps": ["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER"]}},
        "e2b": {"templates": {"base": {"image": BASH_IMAGE, "workdir": "/workspace"},
                              "as-user": {"image": BASH_IMAGE, "user": "user"}}},
    }, "e2b-docker").start()
    yield srv
    srv.stop()


@pytest.mark.backend("docker")
def test_docker_sandbox_through_the_sdk(dsrv, monkeypatch):
    for k, v in sdk_env(dsrv).items():
        monkeypatch.setenv(k, v)
    s = Sandbox.create(timeout=120, envs={"FOO": "ctr"})
    cid = None
    try:
        nat = native(dsrv, "GET", f"/sandboxes/{s.sandbox_id}").json()
        assert nat["provider"] == "docker"
        ps = subprocess.run(["docker", "ps", "-q", "--filter", f"label=stacyvm.sandbox_id={s.sandbox_id}"],
                            capture_output=True, text=True).stdout.split()
        assert len(ps) == 1, ps
        cid = ps[0]
        assert s.commands.run("echo $FOO; cat /etc/hostname").stdout.startswith("ctr\n")
        s.files.write("/tmp/abs.txt", "inside")
        # Absolute paths are the container's: docker itself sees the file.
        got = subprocess.run(["docker", "exec", cid, "cat", "/tmp/abs.txt"],
                             capture_output=True, text=True).stdout
        assert got == "inside"
        assert s.commands.run("cat /tmp/abs.txt").stdout == "inside"
        assert "abs.txt" in [e.name for e in s.files.list("/tmp")]
    finally:
        assert s.kill() is True
    if cid:
        gone = subprocess.run(["docker", "ps", "-aq", "--filter", f"id={cid}"],
                              capture_output=True, text=True).stdout.strip()
        assert gone == ""


@pytest.mark.backend("docker")
def test_docker_template_user_owns_commands_and_files(dsrv, monkeypatch):
    """A template's `user`: commands run as it in its home, files the SDK writes are its,
    and `user="root"` picks root for one call, as on E2B."""
    for k, v in sdk_env(dsrv).items():
        monkeypatch.setenv(k, v)
    s = Sandbox.create("as-user", timeout=120)
    try:
        r = s.commands.run("id -un; id -u; echo $HOME; pwd")
        assert r.stdout == "user\n1000\n/home/user\n/home/user\n", r
        assert s.commands.run("id -un", user="root").stdout == "root\n"
        h = s.commands.run("id -un; sleep 30", background=True)
        pid = h.pid
        procs = native(dsrv, "GET", f"/sandboxes/{s.sandbox_id}/processes").json()
        assert pid in [p["pid"] for p in procs], procs
        assert h.kill() is True
        # A relative write lands in the home, its new parent included, and is the user's:
        # the user can append to it and create files next to it.
        s.files.write("notes/a.txt", "one\n")
        r = s.commands.run("echo two >> notes/a.txt && touch notes/b && cat notes/a.txt && "
                           "stat -c '%U %G' /home/user/notes /home/user/notes/a.txt")
        assert r.stdout == "one\ntwo\nuser user\nuser user\n", r
        assert s.files.make_dir("d1/d2") is True
        assert s.commands.run("touch d1/d2/x && stat -c %U d1 d1/d2").stdout == "user\nuser\n"
        # As root for one call: root's file, which the user cannot change.
        s.files.write("/home/user/root.txt", "r", user="root")
        assert s.commands.run("stat -c %U root.txt").stdout == "root\n"
        with pytest.raises(CommandExitException):
            s.commands.run("echo x >> root.txt")
        # An account the image lacks is the caller's mistake, not a crash.
        with pytest.raises(Exception) as ei:
            s.commands.run("true", user="nobody-here")
        assert "nobody-here" in str(ei.value)
    finally:
        assert s.kill() is True


# -- a sandbox on a remote worker ---------------------------------------------------------------

def test_remote_worker_sandbox_through_the_sdk(server_factory, monkeypatch):
    """The data plane of a sandbox on a `stacyvm worker`: the control plane routes every
    envd call through the worker RPC, nothing E2B-specific on the worker."""
    from test_processes import AGENT
    from test_remote_faults import TOKEN, Worker

    cp = server_factory({"auth": {"api_key": E2B_KEY, "worker_token": TOKEN}}, name="e2b-remote")
    w = Worker(cp, config_extra={"processes": {"agent": str(AGENT.resolve())}}).start()
    try:
        assert native(cp, "DELETE", "/admin/workers/local").status_code == 200
        for k, v in sdk_env(cp).items():
            monkeypatch.setenv(k, v)
        s = Sandbox.create(timeout=120, envs={"WHERE": "remote"})
        assert native(cp, "GET", f"/sandboxes/{s.sandbox_id}").json()["worker_id"] == "worker-a"
        assert s.commands.run("echo $WHERE").stdout == "remote\n"
        h = s.commands.run("sleep 1; echo bg", background=True)
        assert h.wait().stdout == "bg\n"
        data = bytes(range(256)) * 64
        s.files.write("r.bin", data)
        assert s.files.read("r.bin", format="bytes") == data
        assert "r.bin" in [e.name for e in s.files.list(".")]
        assert s.kill() is True
        assert not s.is_running()
    finally:
        w.stop()


def test_own_listener_serves_only_the_e2b_api(server_factory, monkeypatch):
    from conftest import free_port

    port = free_port()
    srv = server_factory({"auth": {"api_key": E2B_KEY},
                          "e2b": {"listen": f"127.0.0.1:{port}"}}, name="e2b-listen")
    url = f"http://127.0.0.1:{port}"
    for k, v in dict(sdk_env(srv), E2B_API_URL=url, E2B_SANDBOX_URL=url).items():
        monkeypatch.setenv(k, v)
    s = Sandbox.create(timeout=60)
    try:
        assert s.commands.run("echo side").stdout == "side\n"
        # The native API is not on this listener; the E2B API stays on the main one too.
        r = httpx.get(url + "/api/v1/sandboxes", headers={"X-API-Key": E2B_KEY})
        assert r.status_code == 404 and r.json()["code"] == 404
        r = httpx.get(srv.base_url + f"/sandboxes/{s.sandbox_id}", headers={"X-API-Key": E2B_KEY})
        assert r.status_code == 200 and r.json()["sandboxID"] == s.sandbox_id
    finally:
        s.kill()


# -- microvm: a guest kernel per sandbox ----------------------------------------------------------

@pytest.fixture(scope="module")
def msrv(_clean_work_root) -> Iterator[Server]:
    ok, why = _bash_image()
    require_backend("qemu", ok, "the bash test image needs docker: " + why)
    from conftest import REPO_ROOT

    # The guest's root filesystem from the bash image (setup-microvm.sh's step 5 for it).
    r = subprocess.run(["bash", str(REPO_ROOT / "scripts/setup-microvm.sh")], capture_output=True,
                       text=True, env=dict(os.environ, STACYVM_MICROVM_TEST_IMAGE=BASH_IMAGE))
    require_backend("qemu", r.returncode == 0, r.stdout[-500:] + r.stderr[-500:])
    srv = Server({
        "auth": {"api_key": E2B_KEY},
        "providers": {"default": "microvm", "microvm": {"enabled": True}},
        "e2b": {"templates": {"base": {"image": BASH_IMAGE, "memory_mb": 256}}},
    }, "e2b-microvm").start()
    providers = {p["name"]: p for p in native(srv, "GET", "/providers").json()}
    require_backend("qemu", bool(providers.get("microvm", {}).get("healthy")),
                    f"microvm provider unhealthy: {providers.get('microvm')}")
    yield srv
    srv.stop()


@pytest.mark.backend("qemu")
@pytest.mark.timeout(300)
def test_microvm_sandbox_through_the_sdk(msrv, monkeypatch):
    for k, v in sdk_env(msrv).items():
        monkeypatch.setenv(k, v)
    s = Sandbox.create(timeout=300, envs={"FOO": "vm"}, request_timeout=240)
    try:
        assert native(msrv, "GET", f"/sandboxes/{s.sandbox_id}").json()["provider"] == "microvm"
        # The guest's own kernel, not the host's.
        r = s.commands.run("echo $FOO; uname -r; cat /proc/1/comm", request_timeout=120)
        lines = r.stdout.split("\n")
        assert lines[0] == "vm" and lines[1] != os.uname().release, r.stdout
        s.files.write("/tmp/vm.bin", bytes(range(256)))
        assert s.files.read("/tmp/vm.bin", format="bytes") == bytes(range(256))
        assert s.commands.run("wc -c < /tmp/vm.bin").stdout.strip() == "256"
        h = s.commands.run("sleep 1; echo bg", background=True)
        assert h.wait().stdout == "bg\n"
        with pytest.raises(CommandExitException):
            s.commands.run("exit 5")
    finally:
        assert s.kill() is True
    assert not s.is_running()
