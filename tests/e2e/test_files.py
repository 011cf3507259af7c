"""File operations: SDK (sync and async) plus raw wire shapes (mock provider, §6)."""

from __future__ import annotations

import re

import pytest
import stacyvm
from conftest import assert_error

MOD_TIME_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
FILEINFO_KEYS = {"path", "size", "mode", "is_dir", "mod_time"}


def test_write_read_roundtrip(sandbox):
    sandbox.write_file("/workspace/hello.txt", "hello world")
    assert sandbox.read_file("/workspace/hello.txt") == "hello world"


def test_overwrite_and_empty(sandbox):
    sandbox.write_file("/workspace/o.txt", "a long first version")
    sandbox.write_file("/workspace/o.txt", "short")
    assert sandbox.read_file("/workspace/o.txt") == "short"
    sandbox.write_file("/workspace/empty.txt", "")
    assert sandbox.read_file("/workspace/empty.txt") == ""
    assert sandbox.stat_file("/workspace/empty.txt")["size"] == 0


UNICODE = "héllo wörld ✓ 日本語 🚀\nline2\ttab\r\n\u0000nul"


def test_non_ascii_roundtrip(sandbox):
    sandbox.write_file("/workspace/u.txt", UNICODE)
    assert sandbox.read_file("/workspace/u.txt") == UNICODE
    assert sandbox.stat_file("/workspace/u.txt")["size"] == len(UNICODE.encode("utf-8"))


def test_files_visible_to_exec(sandbox):
    sandbox.write_file("/workspace/seen.txt", "from files api")
    res = sandbox.exec("cat seen.txt")
    assert res.stdout == "from files api"
    sandbox.exec("printf 'from exec' > made.txt")
    assert sandbox.read_file("/workspace/made.txt") == "from exec"


def test_write_creates_parents(sandbox):
    sandbox.write_file("/workspace/deep/nested/dir/f.txt", "deep")
    assert sandbox.read_file("/workspace/deep/nested/dir/f.txt") == "deep"
    assert sandbox.stat_file("/workspace/deep/nested")["is_dir"] is True


def test_list_shape(sandbox):
    sandbox.write_file("/workspace/a.txt", "aaa")
    sandbox.write_file("/workspace/sub/b.txt", "b")
    items = sandbox.list_files("/workspace")
    by_path = {i["path"]: i for i in items}
    for item in items:
        assert set(item) == FILEINFO_KEYS, item
        assert re.match(MOD_TIME_RE, item["mod_time"]), item
    # mock: request path joined with the entry name, without the leading "/".
    assert "workspace/a.txt" in by_path, by_path
    assert "workspace/sub" in by_path, by_path
    f, d = by_path["workspace/a.txt"], by_path["workspace/sub"]
    assert (f["size"], f["is_dir"], f["mode"]) == (3, False, "-rw-r--r--")
    assert (d["is_dir"], d["mode"]) == (True, "drwxr-xr-x")


def test_list_default_root(sandbox):
    names = {i["path"] for i in sandbox.list_files()}
    assert "workspace" in names, names


def test_stat_shape(sandbox):
    sandbox.write_file("/workspace/s.txt", "hello world")
    st = sandbox.stat_file("/workspace/s.txt")
    assert set(st) == FILEINFO_KEYS, st
    assert st["path"] == "/workspace/s.txt"
    assert (st["size"], st["is_dir"], st["mode"]) == (11, False, "644")
    assert re.match(MOD_TIME_RE, st["mod_time"])
    d = sandbox.stat_file("/workspace")
    assert d["is_dir"] is True
    assert d["mode"] == "20000000755"


def test_glob(sandbox):
    for name in ("a.log", "b.log", "c.txt"):
        sandbox.write_file(f"/workspace/{name}", name)
    assert sorted(sandbox.glob_files("/workspace/*.log")) == ["/workspace/a.log", "/workspace/b.log"]
    assert sandbox.glob_files("/workspace/*.nomatch") == []


def test_glob_does_not_walk_a_link_to_the_host_root(sandbox):
    # Hardening finding 1: a link to `/` in a mock sandbox made `/**/*` walk the host.
    sandbox.exec("ln -s / root && mkdir d && echo x > d/f")
    assert sandbox.glob_files("/**/*") == ["/workspace/d", "/workspace/root"]
    assert sandbox.glob_files("/workspace/*/*") == ["/workspace/d/f"]


def test_delete_then_read_fails(sandbox):
    sandbox.write_file("/workspace/gone.txt", "x")
    sandbox.delete_file("/workspace/gone.txt")
    with pytest.raises(stacyvm.StacyVMError):
        sandbox.read_file("/workspace/gone.txt")
    assert sandbox.glob_files("/workspace/gone.*") == []


def test_recursive_delete(sandbox):
    sandbox.write_file("/workspace/tree/a/b.txt", "b")
    sandbox.write_file("/workspace/tree/c.txt", "c")
    sandbox.delete_file("/workspace/tree", recursive=True)
    with pytest.raises(stacyvm.StacyVMError):
        sandbox.stat_file("/workspace/tree")
    assert "workspace/tree" not in {i["path"] for i in sandbox.list_files("/workspace")}


def test_move(sandbox):
    sandbox.write_file("/workspace/old.txt", "moving")
    sandbox.move_file("/workspace/old.txt", "/workspace/newdir/new.txt")
    assert sandbox.read_file("/workspace/newdir/new.txt") == "moving"
    with pytest.raises(stacyvm.StacyVMError):
        sandbox.read_file("/workspace/old.txt")


def test_chmod_makes_executable(sandbox):
    sandbox.write_file("/workspace/run.sh", "#!/bin/sh\necho ran\n")
    assert sandbox.exec("./run.sh").exit_code != 0  # 0644: not executable yet
    sandbox.chmod_file("/workspace/run.sh", "0755")
    assert sandbox.stat_file("/workspace/run.sh")["mode"] == "755"
    res = sandbox.exec("./run.sh")
    assert (res.exit_code, res.stdout) == (0, "ran\n")


def test_write_with_mode(sandbox):
    sandbox.write_file("/workspace/x.sh", "#!/bin/sh\necho x\n", mode="0755")
    assert sandbox.stat_file("/workspace/x.sh")["mode"] == "755"
    assert sandbox.exec("./x.sh").stdout == "x\n"


# ----------------------------------------------------------------------------------------------
# Raw wire checks
# ----------------------------------------------------------------------------------------------

def _files(sid: str, suffix: str = "") -> str:
    return f"/api/v1/sandboxes/{sid}/files{suffix}"


def test_raw_write_and_read_bytes(http, raw_sandbox):
    r = http.post(_files(raw_sandbox), json={"path": "/workspace/u.txt", "content": UNICODE})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "written"}
    r = http.get(_files(raw_sandbox), params={"path": "/workspace/u.txt"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.content == UNICODE.encode("utf-8")


def test_raw_read_returns_exact_binary(http, raw_sandbox):
    # Every byte value, produced inside the sandbox (writes go through JSON text).
    script = "printf '" + "".join(f"\\{b:03o}" for b in range(256)) + "' > bin.dat"
    r = http.post(f"/api/v1/sandboxes/{raw_sandbox}/exec", json={"command": script})
    assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
    r = http.get(_files(raw_sandbox), params={"path": "/workspace/bin.dat"})
    assert r.status_code == 200, r.text
    assert r.content == bytes(range(256))
    st = http.get(_files(raw_sandbox, "/stat"), params={"path": "/workspace/bin.dat"}).json()
    assert st["size"] == 256


def test_raw_status_bodies(http, raw_sandbox):
    sid = raw_sandbox
    assert http.post(_files(sid), json={"path": "/workspace/m.txt", "content": "m"}).json() \
        == {"status": "written"}
    assert http.post(_files(sid, "/move"), json={"old_path": "/workspace/m.txt",
                                                 "new_path": "/workspace/n.txt"}).json() \
        == {"status": "moved"}
    assert http.post(_files(sid, "/chmod"), json={"path": "/workspace/n.txt", "mode": "755"}).json() \
        == {"status": "chmod applied"}
    assert http.delete(_files(sid), params={"path": "/workspace/n.txt"}).json() \
        == {"status": "deleted"}
    # recursive delete of something missing is fine
    r = http.delete(_files(sid), params={"path": "/workspace/none", "recursive": "true"})
    assert r.status_code == 200 and r.json() == {"status": "deleted"}


@pytest.mark.parametrize("op", ["read", "stat", "list", "delete"])
def test_missing_file_is_404_file_not_found(http, raw_sandbox, server, op):
    path = "/workspace/does/not/exist.txt"
    if op == "read":
        r = http.get(_files(raw_sandbox), params={"path": path})
    elif op == "stat":
        r = http.get(_files(raw_sandbox, "/stat"), params={"path": path})
    elif op == "list":
        r = http.get(_files(raw_sandbox, "/list"), params={"path": path})
    else:
        r = http.delete(_files(raw_sandbox), params={"path": path})
    assert_error(r, 404, "FILE_NOT_FOUND", server)


ESCAPE = "../../etc/passwd"


@pytest.mark.parametrize("op", ["read", "write", "stat", "list", "delete", "move", "chmod", "glob"])
def test_path_escape_is_rejected(http, raw_sandbox, server, op):
    sid = raw_sandbox
    if op == "read":
        r = http.get(_files(sid), params={"path": ESCAPE})
    elif op == "write":
        r = http.post(_files(sid), json={"path": ESCAPE, "content": "pwned"})
    elif op == "stat":
        r = http.get(_files(sid, "/stat"), params={"path": ESCAPE})
    elif op == "list":
        r = http.get(_files(sid, "/list"), params={"path": "../../etc"})
    elif op == "delete":
        r = http.delete(_files(sid), params={"path": "../../etc/hostname-e2e", "recursive": "true"})
    elif op == "move":
        http.post(_files(sid), json={"path": "/workspace/mv.txt", "content": "x"})
        r = http.post(_files(sid, "/move"), json={"old_path": "/workspace/mv.txt",
                                                  "new_path": "../../../tmp/escaped-e2e.txt"})
    elif op == "chmod":
        r = http.post(_files(sid, "/chmod"), json={"path": ESCAPE, "mode": "777"})
    else:
        r = http.get(_files(sid, "/glob"), params={"pattern": "../../etc/*"})
    body = assert_error(r, 400, "BAD_REQUEST", server)
    assert "root:" not in body["message"]


def test_absolute_dotdot_stays_inside_sandbox(http, raw_sandbox, server):
    # An absolute path is cleaned lexically ("/workspace/../../../etc/passwd" is "/etc/passwd"
    # inside the sandbox), so it is either refused or not found: never the host's file.
    r = http.get(_files(raw_sandbox), params={"path": "/workspace/../../../etc/passwd"})
    if r.status_code == 400:
        assert_error(r, 400, "BAD_REQUEST", server)
    else:
        assert_error(r, 404, "FILE_NOT_FOUND", server)


@pytest.mark.parametrize("req", [
    ("GET", "", None, None),                                  # read without path
    ("GET", "/stat", None, None),                             # stat without path
    ("GET", "/glob", None, None),                             # glob without pattern
    ("POST", "", None, {"path": "", "content": "x"}),         # write with empty path
    ("POST", "", None, {"path": "   ", "content": "x"}),      # write with blank path
    ("POST", "", None, {"path": 1, "content": "x"}),          # wrong type
    ("POST", "", None, {"path": "/workspace/x", "content": 5}),
    ("POST", "/chmod", None, {"path": "/workspace/c.txt", "mode": "rwx"}),
    ("POST", "/move", None, {"old_path": "/workspace/c.txt"}),
])
def test_files_bad_input(http, raw_sandbox, server, req):
    method, suffix, params, body = req
    http.post(_files(raw_sandbox), json={"path": "/workspace/c.txt", "content": "c"})
    r = http.request(method, _files(raw_sandbox, suffix), params=params, json=body)
    assert_error(r, 400, "BAD_REQUEST", server)
    # nothing changed
    assert http.get(_files(raw_sandbox), params={"path": "/workspace/c.txt"}).content == b"c"


def test_files_on_unknown_sandbox(http, server):
    r = http.get(_files("sb-0badf11e"), params={"path": "/workspace/x"})
    assert_error(r, 404, "NOT_FOUND", server)


def test_list_sdk_errors(sandbox):
    with pytest.raises(stacyvm.StacyVMError):
        sandbox.list_files("/workspace/no-such-dir")
