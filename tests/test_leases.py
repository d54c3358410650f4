"""The claims a process holds: their local deadlines (pure, in milliseconds), and a real
database going away under a held claim."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mimo_watchd import claimguard
from mimo_watchd.config import Secret
from mimo_watchd.errors import LeaseLostError
from mimo_watchd.ledger.leases import Held, Holdings
from tests import pgserver


def test_a_renewal_extends_what_it_found_and_loses_the_rest() -> None:
    """Claims a renewal found keep a later deadline (from when it was sent); the others are
    lost (another process holds them now)."""
    holdings = Holdings()
    now = time.monotonic()
    holdings.add(1, Held("a", 3, now + 1.0))
    holdings.add(2, Held("b", 7, now + 1.0))
    holdings.renewed(now, {("a", 3): 30.0, ("b", 6): 30.0})
    first, second = holdings.get(1), holdings.get(2)
    assert first is not None and 29.0 < first.remaining() <= 30.0
    assert second is not None and second.lost and second.remaining() < 0


def test_a_deadline_that_passed_unrenewed_is_lost() -> None:
    """No renewal reached the database before the deadline (a freeze, a partition): lost."""
    holdings = Holdings()
    holdings.add(1, Held("a", 1, time.monotonic() - 0.01))
    holdings.add(2, Held("b", 1, time.monotonic() + 60))
    holdings.expire()
    assert holdings.get(1).lost and not holdings.get(2).lost  # type: ignore[union-attr]


def test_nothing_bound_means_nothing_is_checked() -> None:
    """Outside a job (the transcribe command) a request is sent without any claim."""
    claimguard.before_send(1e9)


def test_a_database_gone_under_a_held_claim_stops_the_job(tmp_path: Path) -> None:
    """With the database unreachable, the holder cannot show its claim: the next check before
    a request raises LeaseLostError (nothing is sent), as does recording a plan."""
    pytest.importorskip("psycopg", reason="the [postgres] extra is not installed")
    from mimo_watchd.ledger.postgres import PostgresLedger

    bin_dir = pgserver.binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries to start a server of this test's own")
    server = pgserver.PgServer(bin_dir)
    ledger = PostgresLedger(Secret(server.dsn), host_id="a", lease_seconds=30,
                            state_dir=tmp_path)
    try:
        job = ledger.enqueue(watch="/in", path="/in/a.wav", size=1, mtime_ns=1, sha256="s",
                             arrived_at="t")
        assert ledger.claim() is not None
        ledger.ensure_held(job.id, 10.0)
        server.stop()
        with pytest.raises(LeaseLostError, match="cannot be reached"):
            ledger.ensure_held(job.id, 10.0)
        with pytest.raises(LeaseLostError):
            ledger.set_plan(job.id, {}, {})
    finally:
        ledger.close()
        server.stop()
