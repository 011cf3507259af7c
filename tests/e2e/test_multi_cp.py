"""Two control planes (`stacyvm serve` on different ports) on one Postgres database, scheduling
onto one real `stacyvm worker` (mock provider): admission limits hold across both, sandboxes
made on one are usable and destroyable on the other, `/events` on either shows both, one of
them leads background work, and a kill -9 of one in the middle of 50 concurrent spawns leaves
every record running (and usable through the survivor) or cleaned up, with no orphaned runtime
on the worker. Needs Postgres (STACYVM_TEST_PG_DSN); skipped without it, failed under CI."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import PG_DSN, Server, pg_database, require_backend
from test_remote_faults import TOKEN, Worker, wait_for

MAX = 10


def psql(dsn: str, sql: str) -> str:
    return subprocess.run(["psql", dsn, "-Atc", sql], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def active_count(dsn: str) -> int:
    return int(psql(dsn, "SELECT COUNT(*) FROM sandboxes "
                         "WHERE state NOT IN ('destroyed', 'expired')"))


def states(dsn: str) -> dict[str, str]:
    out = psql(dsn, "SELECT id, state FROM sandboxes")
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def cp_overrides(dsn: str, max_sandboxes: int = 0) -> dict:
    return {
        "database": {"driver": "postgres", "dsn": dsn},
        "auth": {"worker_token": TOKEN},
        "server": {"reconcile_interval": "300ms"},
        "worker": {"stale_after_intervals": 5},
        "defaults": {"max_sandboxes": max_sandboxes},
    }


def drop_local(*cps: Server) -> None:
    """Placement onto the shared worker only: each control plane's `local` worker is its own
    process, so a sandbox there could not be served by the other one."""
    for cp in cps:
        with cp.http() as c:
            r = c.delete("/api/v1/admin/workers/local")
            assert r.status_code in (200, 404), r.text
    with cps[0].http() as c:
        ids = [w["id"] for w in c.get("/api/v1/workers").json()]
    assert "local" not in ids, ids


@pytest.fixture
def shared_db() -> str:
    require_backend("postgres", bool(PG_DSN), "STACYVM_TEST_PG_DSN is not set")
    return pg_database()


@pytest.fixture
def pair(server_factory, shared_db):
    def make(max_sandboxes: int = 0):
        a = server_factory(cp_overrides(shared_db, max_sandboxes), name="cp-a")
        b = server_factory(cp_overrides(shared_db, max_sandboxes), name="cp-b")
        return a, b
    started: list[Worker] = []

    def with_worker(cp: Server, *cps: Server) -> Worker:
        w = Worker(cp).start()
        started.append(w)
        drop_local(*cps)
        return w

    yield make, with_worker
    for w in started:
        w.stop()


def spawn(cp: Server) -> httpx.Response:
    with cp.http(timeout=30) as c:
        return c.post("/api/v1/sandboxes", json={"image": "alpine", "provider": "mock",
                                                 "ttl": "10m"})


def test_limits_sandboxes_events_and_leadership_span_both(pair, shared_db):
    make, with_worker = pair
    a, b = make(MAX)
    with_worker(a, a, b)

    # Exactly one leads background work.
    leaders = []
    for cp in (a, b):
        with cp.http() as c:
            leaders.append(c.get("/api/v1/diagnostics").json()["control_plane"])
    assert sum(1 for l in leaders if l["background_leader"]) == 1, leaders
    assert leaders[0]["instance_id"] != leaders[1]["instance_id"]

    # /events on b, spawns on a and b: b shows both.
    events: list[dict] = []
    stop = threading.Event()

    def listen():
        with httpx.Client(base_url=b.base_url, timeout=httpx.Timeout(5, read=None)) as c:
            with c.stream("GET", "/api/v1/events") as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                    if stop.is_set():
                        return
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(0.5)

    # 30 concurrent spawns spread over both with max_sandboxes 10: never more than 10 live.
    peak = 0
    sampling = threading.Event()

    def sample():
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, active_count(shared_db))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(spawn, [a if i % 2 == 0 else b for i in range(30)]))
    sampling.set()
    sampler.join(timeout=10)
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == MAX and codes.count(429) == 30 - MAX, codes
    for r in results:
        if r.status_code == 429:
            assert r.json()["code"] == "RESOURCE_LIMIT", r.text
    assert peak <= MAX, peak
    assert active_count(shared_db) == MAX
    made = {r.json()["id"]: i % 2 for i, r in enumerate(results) if r.status_code == 201}
    assert set(made.values()) == {0, 1}, "both control planes admitted some"
    for cp in (a, b):
        with cp.http() as c:
            assert {s["id"] for s in c.get("/api/v1/sandboxes").json()} == set(made)

    # A sandbox made on a is usable and destroyable on b, and gone for a afterwards.
    sid = next(i for i, side in made.items() if side == 0)
    with b.http() as cb, a.http() as ca:
        assert cb.get(f"/api/v1/sandboxes/{sid}").status_code == 200
        r = cb.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "echo via-b"})
        assert r.status_code == 200 and r.json()["stdout"] == "via-b\n", r.text
        assert cb.delete(f"/api/v1/sandboxes/{sid}").status_code == 200
        assert ca.get(f"/api/v1/sandboxes/{sid}").status_code == 404
        # The freed slot is admitted again, on either.
        assert spawn(a).status_code == 201
        assert spawn(b).status_code == 429

    wait_for(lambda: any(e["type"] == "sandbox.destroyed" and e.get("sandbox_id") == sid
                         for e in events), 10, "sandbox.destroyed on b's /events")
    stop.set()
    seen = {e.get("sandbox_id") for e in events if e["type"] == "sandbox.created"}
    from_a = {i for i, side in made.items() if side == 0}
    from_b = {i for i, side in made.items() if side == 1}
    assert from_a <= seen, f"b's /events missed a's spawns: {from_a - seen}"
    assert from_b <= seen, f"b's /events missed its own spawns: {from_b - seen}"
    created = [e.get("sandbox_id") for e in events if e["type"] == "sandbox.created"]
    assert len(created) == len(set(created)), f"duplicate events: {created}"


def test_kill9_of_one_control_plane_mid_spawn(pair, shared_db):
    make, with_worker = pair
    a, b = make()
    # The worker reports to b, the survivor.
    worker = with_worker(b, a, b)
    first_ok = threading.Event()

    def spawn_tracked(cp: Server):
        try:
            r = spawn(cp)
            if cp is a and r.status_code == 201:
                first_ok.set()
            return r.status_code
        except httpx.HTTPError:
            return "conn"

    def creating() -> set[str]:
        return {i for i, s in states(shared_db).items() if s == "creating"}

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(spawn_tracked, a if i % 2 == 0 else b) for i in range(50)]
        assert first_ok.wait(30), "no spawn on the victim succeeded"
        # Hold the worker so spawns are caught between their record and their runtime, then
        # kill the victim while some of its spawns are there.
        worker.freeze()
        try:
            wait_for(lambda: len(creating()) >= 2, 15, "spawns in flight")
            in_flight = creating()
            assert a.proc is not None
            a.proc.kill()  # SIGKILL, the server process only
            a.proc.wait(timeout=10)
            a.proc = None
        finally:
            worker.thaw()
        results = [f.result(timeout=60) for f in futures]
    assert results.count(201) >= 25, results  # b's own spawns all succeed

    def settled() -> bool:
        return "creating" not in states(shared_db).values()
    wait_for(settled, 30, f"no record left creating: {states(shared_db)}")

    final = states(shared_db)
    live = {i for i, s in final.items() if s != "destroyed"}
    # The victim's half-made spawns were cleaned up by the survivor (b's own finished).
    assert any(final[i] == "destroyed" for i in in_flight), (in_flight, final)
    assert all(final[i] == "running" for i in live), final
    with b.http() as c:
        listed = {s["id"] for s in c.get("/api/v1/sandboxes").json()}
        assert listed == live
        for sid in live:
            r = c.post(f"/api/v1/sandboxes/{sid}/exec", json={"command": "echo alive"})
            assert r.status_code == 200 and r.json()["stdout"] == "alive\n", (sid, r.text)

    # The worker holds exactly the live sandboxes: nothing orphaned there.
    def held() -> set[str]:
        with b.http() as c:
            cap = c.get(f"/api/v1/workers/{worker.id}").json()["capacity"]
        return {s if isinstance(s, str) else s.get("id", "") for s in cap.get("sandboxes", [])}
    wait_for(lambda: held() == live, 20, f"worker holds exactly the live sandboxes "
             f"(held {len(held())}, live {len(live)})")
    leases = psql(shared_db, "SELECT resource_id FROM leases WHERE holder_id = 'worker-a'")
    assert set(leases.split()) == live, "sandbox leases match the live records"


def test_leadership_moves_within_10s_of_a_leader_kill9(server_factory, shared_db):
    """Hardening finding 14: with the default reconcile interval (30 s) two control planes on
    Postgres, the leader killed with -9: the other leads background work within 10 s (the
    leader lease has its own 1 s tick and 3 s lifetime), not after three reconcile intervals.
    A functional bound, generous on purpose, not a benchmark."""
    over = {"database": {"driver": "postgres", "dsn": shared_db}}
    a = server_factory(over, name="lead-a")
    b = server_factory(over, name="lead-b")

    def leads(cp: Server) -> bool:
        with cp.http(timeout=5) as c:
            return c.get("/api/v1/diagnostics").json()["control_plane"]["background_leader"]

    wait_for(lambda: leads(a) != leads(b), 15, "exactly one leader")
    leader, other = (a, b) if leads(a) else (b, a)
    assert not leads(other)
    assert leader.proc is not None
    leader.proc.kill()  # SIGKILL, the server process only
    leader.proc.wait(timeout=10)
    leader.proc = None
    killed = time.monotonic()
    while not leads(other) and time.monotonic() - killed < 20:
        time.sleep(0.1)
    took = time.monotonic() - killed
    print(f"takeover after {took:.1f}s")
    assert leads(other), "the survivor never took over"
    assert took <= 10, f"takeover took {took:.1f}s"
