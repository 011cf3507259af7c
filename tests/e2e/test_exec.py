"""Exec: sync results, NDJSON streaming (with our terminal exit line), websocket exec."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import stacyvm
import websockets
from conftest import GO_DURATION_RE, assert_error

# ----------------------------------------------------------------------------------------------
# Sync exec through both SDK clients
# ----------------------------------------------------------------------------------------------


def test_echo(sandbox):
    res = sandbox.exec("echo hello")
    assert res.exit_code == 0
    assert res.stdout == "hello\n"
    assert res.stderr == ""
    assert re.match(GO_DURATION_RE, res.duration), res.duration


def test_exit_code_is_not_an_error(sandbox):
    res = sandbox.exec("exit 42")
    assert res.exit_code == 42


def test_stderr_captured(sandbox):
    res = sandbox.exec("echo out; echo oops >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "oops\n")


def test_env(sandbox):
    res = sandbox.exec('printf "%s|%s" "$FOO" "$BAR"', env={"FOO": "bar baz", "BAR": "ünï"})
    assert res.stdout == "bar baz|ünï"


def test_default_workdir_is_workspace(sandbox):
    res = sandbox.exec("pwd")
    assert res.exit_code == 0
    assert res.stdout.strip().endswith("/workspace"), res.stdout


def test_workdir(sandbox):
    sandbox.write_file("/workspace/wd/marker.txt", "m")
    res = sandbox.exec("ls; pwd", workdir="/workspace/wd")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "marker.txt"
    assert lines[1].endswith("/workspace/wd")


def test_argv_mode_does_not_use_a_shell(sandbox):
    res = sandbox.exec("echo", args=["a  b", "$HOME", "*"], mode="argv")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "a  b $HOME *\n"


def test_shell_mode_quotes_args(sandbox):
    res = sandbox.exec("echo", args=["it's", "$HOME", "a;b"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "it's $HOME a;b\n"


def test_large_output(sandbox):
    res = sandbox.exec("i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done")
    lines = res.stdout.splitlines()
    assert len(lines) == 20000
    assert lines[0] == "line-0" and lines[-1] == "line-19999"


def test_timeout_raises_timeout_error(sandbox):
    start = time.monotonic()
    with pytest.raises(stacyvm.StacyVMError) as ei:
        sandbox.exec("sleep 10", timeout="1s")
    elapsed = time.monotonic() - start
    assert ei.value.code == "TIMEOUT"
    # 408 is neither 404 nor 5xx: the SDK raises the base class, not a subclass.
    assert type(ei.value) is stacyvm.StacyVMError
    assert elapsed < 6, f"timeout honoured late: {elapsed:.1f}s"


def test_timeout_wire(http, raw_sandbox, server):
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec",
                  json={"command": "sleep 10", "timeout": "500ms"})
    body = assert_error(r, 408, "TIMEOUT", server)
    assert raw_sandbox in body["message"]


def test_sync_result_shape(http, raw_sandbox):
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec", json={"command": "echo hi"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"exit_code", "stdout", "stderr", "duration"}
    assert body["stdout"] == "hi\n" and body["stderr"] == "" and body["exit_code"] == 0


@pytest.mark.parametrize("body", [
    {"command": "echo", "mode": "bogus"},
    {"command": "   ", "mode": "argv"},
    {"command": "echo", "timeout": "soon"},
    {"command": "echo", "timeout": "5d"},
    {"command": 5},
    {"command": "echo", "args": "not-a-list"},
    {"command": "echo", "env": {"A": 1}},
])
def test_exec_bad_input(http, raw_sandbox, server, body):
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec", json=body)
    assert_error(r, 400, "BAD_REQUEST", server)


@pytest.mark.parametrize("body", [
    {"command": "echo " + "x" * 200_000},                          # one string over 128 KiB
    {"command": "echo", "mode": "argv", "args": ["y" * 100_000] * 12},  # 1.2 MB of arguments
    {"command": "true", "env": {f"V{i}": "z" * 100_000 for i in range(50)}},  # 5 MB environment
])
def test_exec_too_long_for_the_kernel_is_400(http, raw_sandbox, server, body):
    # The kernel would refuse these (E2BIG); the answer is a 400 before anything starts, and
    # the sandbox still runs commands afterwards.
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec", json=body)
    assert_error(r, 400, "BAD_REQUEST", server)
    ok = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec", json={"command": "echo still"})
    assert ok.status_code == 200 and ok.json()["stdout"] == "still\n"


def test_exec_large_but_legal_arguments_run(http, raw_sandbox):
    big = "q" * 100_000
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec",
                  json={"command": 'printf %s "$BIG" | wc -c', "env": {"BIG": big}})
    assert r.status_code == 200 and r.json()["stdout"].strip() == "100000", r.text[:300]


def test_exec_timeout_over_max(http, raw_sandbox, server):
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec",
                  json={"command": "true", "timeout": "20m"})  # defaults.max_exec_timeout 10m
    assert_error(r, 429, "RESOURCE_LIMIT", server)


def test_exec_unknown_sandbox(sdk):
    ghost = sdk.spawn()
    ghost.destroy()
    with pytest.raises(stacyvm.SandboxNotFound):
        ghost.exec("true")


# ----------------------------------------------------------------------------------------------
# NDJSON streaming
# ----------------------------------------------------------------------------------------------


def _split(chunks):
    out = "".join(c.data for c in chunks if c.stream == "stdout")
    err = "".join(c.data for c in chunks if c.stream == "stderr")
    return out, err


def test_stream_sdk_iterates_cleanly(sandbox):
    chunks = list(sandbox.exec_stream("echo one; echo two; echo warn >&2; exit 3"))
    assert chunks, "no chunks"
    streams = [c.stream for c in chunks]
    assert set(streams) <= {"stdout", "stderr", "exit"}, streams
    # Our terminal line reaches the SDK as one empty "exit" chunk, last, and nothing breaks.
    assert streams.count("exit") == 1 and streams[-1] == "exit", streams
    assert chunks[-1].data == ""
    out, err = _split(chunks)
    assert out == "one\ntwo\n"
    assert err == "warn\n"


def test_stream_preserves_stdout_order(sandbox):
    chunks = list(sandbox.exec_stream("i=1; while [ $i -le 300 ]; do echo l$i; i=$((i+1)); done"))
    out, _ = _split(chunks)
    assert out.splitlines() == [f"l{i}" for i in range(1, 301)]


def test_stream_with_env_workdir_argv(sandbox):
    sandbox.write_file("/workspace/sw/f.txt", "x")
    chunks = list(sandbox.exec_stream("sh", args=["-c", 'echo "$V"; ls'], mode="argv",
                                      env={"V": "val"}, workdir="/workspace/sw"))
    out, _ = _split(chunks)
    assert out == "val\nf.txt\n"


def _ndjson_lines(http, sid, body):
    lines = []
    with http.stream("POST", f"/api/v1/sandboxes/{sid}/exec", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson"), r.headers
        for line in r.iter_lines():
            if line.strip():
                lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("code", [0, 1, 42])
def test_stream_raw_last_line_is_exit(http, raw_sandbox, code):
    lines = _ndjson_lines(http, raw_sandbox, {"command": f"echo a; echo b >&2; exit {code}"})
    *chunks, last = lines
    for c in chunks:
        assert set(c) == {"stream", "data"}, c
        assert c["stream"] in ("stdout", "stderr"), c
    assert set(last) == {"stream", "data", "exit_code", "duration"}, last
    assert last["stream"] == "exit" and last["data"] == ""
    assert last["exit_code"] == code
    assert re.match(GO_DURATION_RE, last["duration"]), last
    assert "".join(c["data"] for c in chunks if c["stream"] == "stdout") == "a\n"
    assert "".join(c["data"] for c in chunks if c["stream"] == "stderr") == "b\n"


def test_stream_chunks_arrive_before_command_ends(http, raw_sandbox):
    start = time.monotonic()
    first_at = None
    got = []
    with http.stream("POST", f"/api/v1/sandboxes/{raw_sandbox}/exec",
                     json={"command": "echo first; sleep 2; echo second", "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if first_at is None:
                first_at = time.monotonic() - start
            got.append(obj)
    total = time.monotonic() - start
    assert got[0] == {"stream": "stdout", "data": "first\n"}, got
    assert first_at is not None and first_at < 1.5, f"first chunk after {first_at:.2f}s"
    assert total >= 2, "command did not run to completion"
    assert got[-1]["stream"] == "exit" and got[-1]["exit_code"] == 0


def test_stream_timeout_emits_stderr_then_exit(http, raw_sandbox):
    lines = _ndjson_lines(http, raw_sandbox, {"command": "echo start; sleep 10", "timeout": "1s"})
    *chunks, last = lines
    assert last["stream"] == "exit", lines
    assert last["exit_code"] != 0, last
    stderr = "".join(c["data"] for c in chunks if c["stream"] == "stderr")
    assert f"exec timeout: {raw_sandbox}" in stderr, lines


def test_stream_errors_before_streaming(http, server):
    r = http.post("/api/v1/sandboxes/sb-0badc0de/exec", json={"command": "true", "stream": True})
    assert_error(r, 404, "NOT_FOUND", server)


# ----------------------------------------------------------------------------------------------
# WebSocket exec
# ----------------------------------------------------------------------------------------------


async def _ws_exec(server, sid, request, raw=None):
    url = f"{server.ws_url}/api/v1/sandboxes/{sid}/exec/ws"
    msgs = []
    async with websockets.connect(url, additional_headers=server.headers()) as ws:
        await ws.send(raw if raw is not None else json.dumps(request))
        try:
            while True:
                msgs.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=30)))
        except websockets.ConnectionClosed as e:
            close = e.rcvd
    return msgs, close


def test_ws_exec_chunks_then_done(server, raw_sandbox):
    msgs, close = asyncio.run(_ws_exec(server, raw_sandbox,
                                       {"command": "echo hi; echo there >&2; exit 7"}))
    assert msgs[-1] == {"type": "done"}, msgs
    chunks = msgs[:-1]
    exits = [m for m in chunks if m.get("stream") == "exit"]
    assert len(exits) == 1 and chunks[-1] is exits[0], msgs
    assert exits[0]["exit_code"] == 7
    out = "".join(m["data"] for m in chunks if m.get("stream") == "stdout")
    err = "".join(m["data"] for m in chunks if m.get("stream") == "stderr")
    assert (out, err) == ("hi\n", "there\n")
    assert close is not None and close.code == 1000, close


def test_ws_exec_argv_env(server, raw_sandbox):
    msgs, _ = asyncio.run(_ws_exec(server, raw_sandbox, {
        "command": "printenv", "args": ["WSVAR"], "mode": "argv", "env": {"WSVAR": "w1"}}))
    out = "".join(m.get("data", "") for m in msgs if m.get("stream") == "stdout")
    assert out == "w1\n"
    assert msgs[-1] == {"type": "done"}


def test_ws_invalid_request_closes_1007(server, raw_sandbox):
    msgs, close = asyncio.run(_ws_exec(server, raw_sandbox, None, raw="this is not json"))
    assert close is not None and close.code == 1007, (msgs, close)


def test_ws_bad_mode_reports_error(server, raw_sandbox):
    msgs, close = asyncio.run(_ws_exec(server, raw_sandbox, {"command": "x", "mode": "bogus"}))
    assert msgs and "error" in msgs[0], msgs
    assert close is not None and close.code == 1011, close
