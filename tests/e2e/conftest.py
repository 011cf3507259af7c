"""Harness for the end-to-end suite.

Starts the built `stacyvm serve` (env STACYVM_BIN, default target/debug/stacyvm) on a free
loopback port, with a temp dir as CWD, TMPDIR and HOME and a temp YAML config passed through
STACYVM_CONFIG (mock provider, SQLite in the temp dir). Tests talk to it with the official SDK
(`stacyvm==0.1.1`, unchanged), sync and async, plus raw httpx / websockets for wire details.

With STACYVM_E2E_DATABASE=postgres (and STACYVM_TEST_PG_DSN from scripts/setup-postgres.sh)
each server gets a fresh Postgres database instead (created with `psql`, dropped at the end).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import stacyvm
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STACYVM_BIN", REPO_ROOT / "target" / "debug" / "stacyvm"))
WORK_ROOT = Path(os.environ.get("STACYVM_WORK_DIR", REPO_ROOT / ".test-work")) / "e2e"
STARTUP_TIMEOUT_S = 30.0
CI = os.environ.get("CI", "") in ("true", "1")

PG_DSN = os.environ.get("STACYVM_TEST_PG_DSN", "")
E2E_DATABASE = os.environ.get("STACYVM_E2E_DATABASE", "sqlite")
if E2E_DATABASE not in ("sqlite", "postgres"):
    raise RuntimeError(f"STACYVM_E2E_DATABASE must be sqlite or postgres, not {E2E_DATABASE!r}")
_PG_DATABASES: list[str] = []

API_KEY = "e2e-api-key-0123456789abcdef"
ADMIN_KEY = "e2e-admin-key-0123456789abcdef"

BASE_CONFIG: dict[str, Any] = {
    "server": {"host": "127.0.0.1"},
    "providers": {
        "default": "mock",
        "mock": {"enabled": True},
        "docker": {"enabled": False},
        "firecracker": {"enabled": False},
    },
    "logging": {"level": "debug", "format": "json"},
}
# The in-sandbox agent built from this checkout (scripts/test.sh exports it), so processes run
# the agent under test, not one installed on the machine by an earlier setup.
if os.environ.get("STACYVM_AGENT"):
    BASE_CONFIG["processes"] = {"agent": os.path.abspath(os.environ["STACYVM_AGENT"])}


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_backend(name: str, available: bool, why: str = "") -> None:
    """Skip a test whose backend is missing, except under CI=true where that is a failure."""
    if available:
        return
    msg = f"backend {name} unavailable{': ' + why if why else ''}"
    if CI:
        pytest.fail(msg + " (CI=true: missing backends fail)")
    pytest.skip(msg)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test is a failed test: CI must not go green on what it never ran."""
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true (missing backends must fail): {reason}"


def _psql(sql: str) -> None:
    subprocess.run(["psql", PG_DSN, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   capture_output=True, timeout=30)


def pg_database() -> str:
    """A fresh, empty database on the Postgres test server; returns its DSN. Dropped when the
    session ends."""
    if not PG_DSN:
        require_backend("postgres", False, "STACYVM_TEST_PG_DSN is not set "
                        "(eval \"$(scripts/setup-postgres.sh)\")")
    if shutil.which("psql") is None:
        require_backend("postgres", False, "psql not found")
    name = f"e2e_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    try:
        _psql(f'CREATE DATABASE "{name}"')
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        err = getattr(e, "stderr", b"") or b""
        require_backend("postgres", False, f"CREATE DATABASE failed: {err.decode(errors='replace')}")
    _PG_DATABASES.append(name)
    parts = urllib.parse.urlsplit(PG_DSN)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


class Server:
    """One `stacyvm serve` process owned by the test session."""

    _counter = 0

    def __init__(self, overrides: dict | None = None, name: str = "srv"):
        if not BIN.is_file() or not os.access(BIN, os.X_OK):
            pytest.fail(f"stacyvm binary not found at {BIN}; build it (cargo build -p stacyvm) "
                        "or set STACYVM_BIN")
        Server._counter += 1
        self.dir = WORK_ROOT / f"{Server._counter:03d}-{name}"
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "tmp").mkdir(parents=True)
        (self.dir / "home").mkdir()
        self.overrides = overrides or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.config: dict = {}
        self.log_path = self.dir / "server.log"
        # Kept across restarts: a restarted server finds its own database again.
        self.database: dict | None = None

    # -- configuration ------------------------------------------------------------------------
    @property
    def auth_configured(self) -> bool:
        auth = self.config.get("auth", {})
        return bool(auth.get("api_key") or auth.get("admin_api_key"))

    @property
    def api_key(self) -> str | None:
        auth = self.config.get("auth", {})
        return auth.get("api_key") or auth.get("admin_api_key") or None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def host_tmp(self) -> str:
        """Host directory the server uses as TMPDIR: must never appear in an API message."""
        return str(self.dir)

    # -- process ------------------------------------------------------------------------------
    def start(self) -> "Server":
        last_err = ""
        for _ in range(3):
            self.port = free_port()
            if self.database is None:
                if "database" in self.overrides:
                    self.database = dict(self.overrides["database"])
                elif E2E_DATABASE == "postgres":
                    self.database = {"driver": "postgres", "dsn": pg_database()}
                else:
                    self.database = {"driver": "sqlite", "path": str(self.dir / "stacyvm.db")}
            overrides = {k: v for k, v in self.overrides.items() if k != "database"}
            self.config = deep_merge(
                deep_merge(BASE_CONFIG, {"server": {"port": self.port},
                                         "database": self.database}),
                overrides,
            )
            cfg_path = self.dir / "config.yaml"
            cfg_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            env = {k: v for k, v in os.environ.items() if not k.startswith("STACYVM_")}
            env.update({
                "STACYVM_CONFIG": str(cfg_path),
                "TMPDIR": str(self.dir / "tmp"),
                "HOME": str(self.dir / "home"),
                "RUST_BACKTRACE": "1",
            })
            log = open(self.log_path, "ab")
            # Own process group: stop() also ends the commands the mock provider ran for us.
            self.proc = subprocess.Popen(
                [str(BIN), "serve"], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            log.close()
            ok, last_err = self._wait_healthy()
            if ok:
                return self
            self.stop()
            if "in use" not in self.log_tail().lower():
                break
        pytest.fail(f"stacyvm serve did not become healthy: {last_err}\n"
                    f"--- {self.log_path} (tail) ---\n{self.log_tail()}")

    def _wait_healthy(self) -> tuple[bool, str]:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        err = "no answer"
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False, f"process exited with {self.proc.returncode}"
            try:
                r = httpx.get(f"{self.base_url}/api/v1/health", headers=headers, timeout=2)
                if r.status_code == 200:
                    return True, ""
                err = f"health answered {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as e:
                err = repr(e)
            time.sleep(0.1)
        return False, f"timeout after {STARTUP_TIMEOUT_S}s ({err})"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Stragglers of our own group (sandbox commands) go too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- clients ------------------------------------------------------------------------------
    def headers(self, api_key: str | None = "default") -> dict[str, str]:
        key = self.api_key if api_key == "default" else api_key
        return {"X-API-Key": key} if key else {}

    def http(self, api_key: str | None = "default", **kw) -> httpx.Client:
        """Raw HTTP client; sends the configured API key unless api_key=None."""
        return httpx.Client(base_url=self.base_url, headers=self.headers(api_key),
                            timeout=kw.pop("timeout", 30), **kw)

    def sync_client(self, api_key: str | None = "default", user_id: str | None = None):
        key = self.api_key if api_key == "default" else api_key
        return stacyvm.Client(self.base_url, api_key=key, user_id=user_id)

    def sdk(self, kind: str, api_key: str | None = "default", user_id: str | None = None):
        """An SDK client of the given kind ("sync" or "async"), both with the sync call shape."""
        key = self.api_key if api_key == "default" else api_key
        if kind == "sync":
            return stacyvm.Client(self.base_url, api_key=key, user_id=user_id)
        bridge = AsyncBridge()
        return SyncView(stacyvm.AsyncClient(self.base_url, api_key=key, user_id=user_id), bridge)


# ---------------------------------------------------------------------------------------------
# Sync call shape over the async SDK, so one test body exercises both clients. The async SDK's
# own coroutines and async generators run for real on a private event loop.
# ---------------------------------------------------------------------------------------------
class AsyncBridge:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class SyncView:
    def __init__(self, target: Any, bridge: AsyncBridge):
        self._target = target
        self._bridge = bridge
        self.kind = "async"

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, stacyvm.AsyncSandbox):
            return SyncView(value, self._bridge)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.isasyncgenfunction(attr):
            def collect(*a, **kw):
                async def run():
                    return [item async for item in attr(*a, **kw)]
                return iter(self._bridge.run(run()))
            return collect
        if inspect.iscoroutinefunction(attr):
            def call(*a, **kw):
                return self._wrap(self._bridge.run(attr(*a, **kw)))
            return call
        return attr

    def __enter__(self):
        self._bridge.run(self._target.__aenter__())
        return self

    def __exit__(self, *exc):
        self._bridge.run(self._target.__aexit__(*exc))
        return False

    def close(self) -> None:
        if isinstance(self._target, stacyvm.AsyncClient):
            self._bridge.run(self._target.close())
            self._bridge.close()


def close_sdk(client: Any) -> None:
    client.close()


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
def _start(overrides: dict | None, name: str) -> Server:
    return Server(overrides, name).start()


@pytest.fixture(scope="session", autouse=True)
def _clean_work_root() -> Iterator[None]:
    shutil.rmtree(WORK_ROOT, ignore_errors=True)
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    yield
    # Session fixtures (servers) are finalised before this one: the databases are idle.
    # Dropped in parallel: each DROP DATABASE takes a few hundred milliseconds.
    drops = [subprocess.Popen(["psql", PG_DSN, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in _PG_DATABASES]
    for p in drops:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="session")
def server(_clean_work_root) -> Iterator[Server]:
    """The shared default server: mock provider, no auth, no limits."""
    srv = _start(None, "default")
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(_clean_work_root) -> Iterator[Callable[..., Server]]:
    """Start extra servers with config overrides, e.g. factory({"auth": {"api_key": "k"}})."""
    started: list[Server] = []

    def make(overrides: dict | None = None, name: str = "custom") -> Server:
        srv = _start(overrides, name)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def configured_server(request, server_factory) -> Server:
    """Indirect parametrisation: @pytest.mark.parametrize("configured_server", [cfg], indirect=True)."""
    return server_factory(getattr(request, "param", None), name="param")


@pytest.fixture(params=["sync", "async"])
def sdk_kind(request) -> str:
    return request.param


@pytest.fixture
def sdk(server, sdk_kind):
    """Official SDK client (sync Client, or AsyncClient through SyncView) on the default server."""
    client = server.sdk(sdk_kind)
    yield client
    close_sdk(client)


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with server.http() as c:
        yield c


@pytest.fixture
def sandbox(sdk):
    """A fresh sandbox from the parametrised SDK client, destroyed afterwards."""
    sb = sdk.spawn(image="alpine:latest")
    yield sb
    try:
        sb.destroy()
    except stacyvm.StacyVMError:
        pass


@pytest.fixture
def raw_sandbox(http) -> Iterator[str]:
    """A sandbox id created over raw HTTP, destroyed afterwards."""
    r = http.post("/api/v1/sandboxes", json={"image": "alpine:latest"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    yield sid
    http.delete(f"/api/v1/sandboxes/{sid}")


# ---------------------------------------------------------------------------------------------
# Assertion helpers
# ---------------------------------------------------------------------------------------------
def assert_error(resp: httpx.Response, status: int, code: str, server: Server | None = None) -> dict:
    """Error responses: exact status, JSON body with exactly code+message, no host path leak."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.request.url}: expected {status} {code}, "
        f"got {resp.status_code}: {resp.text[:500]}")
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    if server is not None:
        assert_no_host_path(body["message"], server)
    return body


def assert_no_host_path(message: str, server: Server) -> None:
    for leak in (server.host_tmp, str(WORK_ROOT), "/tmp/stacyvm-"):
        assert leak not in message, f"host path {leak!r} leaked in message: {message!r}"


def sandbox_ids(http: httpx.Client) -> set[str]:
    r = http.get("/api/v1/sandboxes")
    assert r.status_code == 200, r.text
    return {s["id"] for s in r.json()}


# Go `Duration.String()` output: "0s", "1.5s", "127.3ms", "1m30s", "30m0s", "1h0m0s".
GO_DURATION_RE = r"^(0s|-?(\d+h)?(\d+m)?(\d+(\.\d+)?(s|ms|µs|us|ns)))$"
SANDBOX_ID_RE = r"^sb-[0-9a-f]{8}$"


def parse_time(value: str) -> "datetime":
    """RFC3339 with up to 9 fractional digits (Go's time.Time JSON)."""
    import re
    from datetime import datetime

    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
    assert m, f"not an RFC3339 timestamp: {value!r}"
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}")


def ttl_seconds(sandbox: dict) -> float:
    return (parse_time(sandbox["expires_at"]) - parse_time(sandbox["created_at"])).total_seconds()
