"""The ledger on a real SQLite file: upgrading a ledger written by an earlier version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mimo_watchd.ledger import _SCHEMA, SCHEMA_VERSION, Ledger, State


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


def test_version_1_ledger_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    _version_1(tmp_path / "ledger.sqlite3")
    ledger = Ledger(tmp_path)
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
    assert version == str(SCHEMA_VERSION) == "2"
    Ledger(tmp_path).close()  # opening an upgraded ledger again changes nothing
