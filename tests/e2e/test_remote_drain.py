"""SIGTERM on a real `stacyvm worker` process: it drains (its heartbeat says `draining`, so the
control plane places no new sandbox on it) while an in-flight command keeps it busy, then exits
0 within `worker.shutdown_timeout`, its leftover command killed."""

from __future__ import annotations

import os
import signal
import threading
import time

from test_remote_faults import TOKEN, Worker, wait_for

SHUTDOWN_TIMEOUT_S = 4


def worker_status(c, wid: str) -> str:
    r = c.get(f"/api/v1/workers/{wid}")
    return r.json().get("status", "") if r.status_code == 200 else ""


def test_sigterm_drains_then_exits_within_shutdown_timeout(server_factory):
    cp = server_factory({"auth": {"worker_token": TOKEN}}, name="remote-drain")
    w = Worker(cp, worker_extra={"shutdown_timeout": f"{SHUTDOWN_TIMEOUT_S}s"}).start()
    try:
        with cp.http(timeout=60) as c:
            assert c.delete("/api/v1/admin/workers/local").status_code == 200
            r = c.post("/api/v1/sandboxes", json={"image": "alpine", "provider": "mock"})
            assert r.status_code == 201 and r.json()["worker_id"] == w.id, r.text
            sid = r.json()["id"]
            assert worker_status(c, w.id) == "online"

            # A long command in flight keeps the draining worker alive for shutdown_timeout.
            started = threading.Event()

            def run_long():
                with cp.http(timeout=60) as c2:
                    with c2.stream("POST", f"/api/v1/sandboxes/{sid}/exec",
                                   json={"command": "echo go; sleep 60", "stream": True}) as s:
                        for line in s.iter_lines():
                            if line.strip():
                                started.set()

            t = threading.Thread(target=run_long, daemon=True)
            t.start()
            assert started.wait(20), "the long command never started"

            sent = time.monotonic()
            os.kill(w.proc.pid, signal.SIGTERM)
            wait_for(lambda: worker_status(c, w.id) == "draining", SHUTDOWN_TIMEOUT_S,
                     "heartbeat reporting draining")
            assert w.proc.poll() is None, "exited before its in-flight command was given time"
            # No placement on a draining worker (and `local` is out): the spawn is refused.
            r = c.post("/api/v1/sandboxes", json={"image": "alpine", "provider": "mock"})
            assert r.status_code == 429, r.text

            rc = w.proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 10)
            took = time.monotonic() - sent
            w.proc = None
            assert rc == 0, f"exit code {rc}\n{w.log_tail()}"
            assert SHUTDOWN_TIMEOUT_S - 0.5 <= took <= SHUTDOWN_TIMEOUT_S + 5, took
            t.join(15)
            assert not t.is_alive(), "the client stream did not end with the worker"
            print(f"\nSIGTERM → exit 0 after {took:.2f} s (shutdown_timeout {SHUTDOWN_TIMEOUT_S} s)")
    finally:
        w.stop()
