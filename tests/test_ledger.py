"""The ledger on a real SQLite file: upgrading a ledger written by an earlier version."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mimo_watchd.ledger import SqliteLedger, State
from mimo_watchd.ledger.sqlite import _SCHEMA, SCHEMA_VERSION


def _version_1(path: Path) -> None:
    """A ledger as version 1 wrote it (no ``interruptions``), with one job mid-processing."""
    schema = _SCHEMA.replace("    interruptions INTEGER NOT NULL DEFAULT 0,\n", "")
    assert schema != _SCHEMA
    db = sqlite3.connect(path)
    db.executescript(schema)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO jobs (watch, path, size, mtime_ns, sha256, state, attempts, "
               "created_at, updated_at) VALUES ('w', '/in/a.wav', 10, 1, 'abc', 'PROCESSING', "
               "1, 0, 0)")
    db.commit()
    db.close()


def _dump(path: Path) -> list[str]:
    """Every schema statement and row of the SQLite file at ``path``, as SQL."""
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_version_1_ledger_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    """A version-1 ledger is upgraded in place, keeps its jobs, and stays as it is when opened
    again."""
    _version_1(tmp_path / "ledger.sqlite3")
    ledger = SqliteLedger(tmp_path)
    try:
        assert ledger.recover(unclean=True) == 1
        (job,) = ledger.jobs(State.QUEUED)
        assert (job.path, job.attempts, job.interruptions) == ("/in/a.wav", 0, 1)
        ledger.record_response(sha256="abc", variant="m|auto", span="0", job_id=job.id, raw={})
        job = ledger.get(job.id)
        assert job is not None and job.interruptions == 0
    finally:
        ledger.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    (version,) = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    db.close()
    assert version == str(SCHEMA_VERSION) == "3"
    upgraded = _dump(tmp_path / "ledger.sqlite3")
    SqliteLedger(tmp_path).close()
    assert _dump(tmp_path / "ledger.sqlite3") == upgraded


def test_a_job_running_when_the_daemon_died_runs_alone(tmp_path: Path) -> None:
    """After an unclean stop, each job that was running is taken only when nothing else is
    processing, and nothing else is taken while it runs; only its own crashes count then."""
    ledger = SqliteLedger(tmp_path)
    try:
        for i, name in enumerate(["a", "b", "c"]):
            ledger.enqueue(watch="w", path=f"/in/{name}.wav", size=1, mtime_ns=i,
                           sha256=name, arrived_at="t")
        a, b = ledger.claim(), ledger.claim()
        assert a is not None and b is not None and (a.path, b.path) == ("/in/a.wav", "/in/b.wav")
        assert ledger.recover(unclean=True) == 2  # the daemon died while a and b ran
        later = time.time() + 1
        c = ledger.claim(later)  # recovered jobs queue behind those that were waiting
        assert c is not None and (c.path, c.interruptions) == ("/in/c.wav", 0)
        assert ledger.claim(later) is None  # a is next, a suspect: it waits for c to finish
        ledger.finish(c.id, State.DONE, final_path="/out/c.wav", outcome="done")
        a = ledger.claim(later)
        assert a is not None and (a.path, a.interruptions) == ("/in/a.wav", 1)
        assert ledger.claim(later) is None  # a runs alone: b waits although it is due
        ledger.finish(a.id, State.DONE, final_path="/out/a.wav", outcome="done")
        b = ledger.claim(later)
        assert b is not None and (b.path, b.interruptions) == ("/in/b.wav", 1)
        assert ledger.claim(later) is None
        assert ledger.recover(unclean=True) == 1  # only b was running: only b is counted
        counts = {j.path: j.interruptions for j in ledger.jobs()}
        assert counts == {"/in/a.wav": 1, "/in/b.wav": 2, "/in/c.wav": 0}
    finally:
        ledger.close()
