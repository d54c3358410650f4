"""Alive (the watchdog pings) and healthy (/healthz), decided from threads, jobs and pauses."""

from __future__ import annotations

import threading

from mimo_watchd.health import Health


def make(paused: str | None = None, stall: float = 60.0) -> Health:
    return Health(stall_seconds=lambda: stall, watchers_alive=lambda: True,
                  stopping=lambda: False, paused=lambda: paused)


def test_not_alive_while_starting_then_alive() -> None:
    """Before the watchers run the daemon is not alive yet ("starting"), not dead."""
    health = make()
    assert health.alive() == (False, "starting: recovering the ledger and scanning the watches")
    health.serving.set()
    assert health.alive() == (True, "ok") and health.healthy() == (True, "ok")


def test_a_dead_thread_or_a_stalled_job_is_not_alive() -> None:
    """A thread that ended, or a job with no progress for the stall limit, fails alive."""
    health = make(stall=0.0)
    health.serving.set()
    done = threading.Thread(target=lambda: None, name="worker-0")
    done.start()
    done.join()
    health.threads.append(done)
    assert health.alive() == (False, "threads died: worker-0")
    health.threads.clear()
    health.job_started(7)
    assert health.alive() == (False, "1 job(s) made no progress for 0 s")
    health.job_ended(7)
    assert health.alive() == (True, "ok") and health.jobs == 0


def test_paused_is_alive_but_not_healthy() -> None:
    """A pause keeps the watchdog fed (a restart cures nothing) but /healthz says why."""
    health = make(paused="paused since 2026-01-01T00:00:00Z: the API at x is unreachable")
    health.serving.set()
    assert health.alive() == (True, "ok")
    assert health.healthy() == (False, "paused since 2026-01-01T00:00:00Z: the API at x is "
                                       "unreachable")
