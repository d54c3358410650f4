"""The full-ledger policy (``GuardedLedger``) on a real ledger whose storage is switched full."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd.errors import LedgerFullError
from mimo_watchd.ledger import SqliteLedger, State
from mimo_watchd.ledger.guard import GuardedLedger


class Fillable(SqliteLedger):
    """A real SQLite ledger whose every transaction fails as on a full disk while ``full``."""

    full = False

    def _tx(self, *, durable: bool = False) -> Any:
        if self.full:
            raise LedgerFullError("the state folder /state is full (test)")
        return super()._tx(durable=durable)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def inner(tmp_path: Path) -> Iterator[Fillable]:
    ledger = Fillable(tmp_path)
    yield ledger
    ledger.close()


def _claimed(ledger: GuardedLedger) -> int:
    job = ledger.enqueue(watch="/in", path="/in/a.wav", size=1, mtime_ns=1, sha256="a",
                         arrived_at="t")
    claimed = ledger.claim()
    assert claimed is not None and claimed.id == job.id
    return job.id


def test_a_paid_answer_is_held_until_space_returns(inner: Fillable) -> None:
    """An answer that cannot be journaled raises (the job stops paying) but is kept: lookups
    find it, the ledger is blocked with the reason, and flush journals it once space is back."""
    guard = GuardedLedger(inner, retry_every=60.0)
    job_id = _claimed(guard)
    inner.full = True
    with pytest.raises(LedgerFullError):
        guard.record_response(sha256="a", variant="v", span="0", job_id=job_id, raw={"n": 1})
    assert guard.problem == "the state folder /state is full (test)" and guard.since
    assert guard.lookup_response(sha256="a", variant="v", span="0") == {"n": 1}
    assert inner.lookup_response(sha256="a", variant="v", span="0") is None
    assert guard.held() == (1, 0)
    assert not guard.flush()  # still full
    inner.full = False
    assert guard.flush() and guard.problem is None and guard.held() == (0, 0)
    assert inner.lookup_response(sha256="a", variant="v", span="0") == {"n": 1}


def test_while_blocked_jobs_are_held_and_new_work_is_refused(inner: Fillable) -> None:
    """While blocked, a requeue and a finish are held in order and return; intake, claims and
    plans are refused at once without touching the storage; reads go on."""
    guard = GuardedLedger(inner, retry_every=60.0)
    job_id = _claimed(guard)
    inner.full = True
    guard.requeue(job_id, error="paused", refund_attempt=True)
    guard.finish(job_id, State.DONE, final_path="/out/a.wav", outcome="done")
    inner.full = False  # space is back, but nothing jumps the queue of what is held
    for refused in (lambda: guard.claim(),
                    lambda: guard.set_plan(job_id, {}, {}),
                    lambda: guard.enqueue(watch="/in", path="/in/b.wav", size=1, mtime_ns=1,
                                          sha256="b", arrived_at="t")):
        with pytest.raises(LedgerFullError):
            refused()
    assert guard.counts()["PROCESSING"] == 1 and guard.held() == (0, 2)
    assert guard.flush()
    (job,) = guard.jobs()
    assert (job.state, job.final_path, job.attempts) == (State.DONE, "/out/a.wav", 0)


def test_space_is_looked_for_again_with_backoff(inner: Fillable) -> None:
    """flush is due a second after the ledger filled, then at doubling intervals up to
    retry_every; not due while writable."""
    clock = Clock()
    guard = GuardedLedger(inner, retry_every=5.0, clock=clock)
    assert guard.retry_in() is None
    job_id = _claimed(guard)
    inner.full = True
    guard.requeue(job_id)
    waits = []
    for _ in range(4):
        waits.append(guard.retry_in())
        clock.now += waits[-1] or 0.0
        assert not guard.flush()
    assert waits == [1.0, 2.0, 4.0, 5.0]
