"""The ledger's boundary: the protocol the program uses, and sqlite3 errors translated there."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd.config import Secret, default_api_settings
from mimo_watchd.errors import LedgerError
from mimo_watchd.ledger import Job, Ledger, SqliteLedger, State, open_ledger

# Plausible arguments for every method of the protocol.
CALLS: dict[str, dict[str, Any]] = {
    "active_for_path": {"path": "/in/a.wav"},
    "enqueue": {"watch": "/in", "path": "/in/a.wav", "size": 1, "mtime_ns": 1, "sha256": "s",
                "arrived_at": "t"},
    "done_with_content": {"sha256": "s"},
    "taken_elsewhere": {"job": Job(id=1, watch="/in", path="/in/a.wav", size=1, mtime_ns=1,
                                   sha256="s", state=State.QUEUED, attempts=0, interruptions=0,
                                   next_attempt_at=0.0, last_error=None, arrived_at=None,
                                   plan=None, result=None, final_path=None, outcome=None,
                                   updated_at=0.0)},
    "claim": {},
    "claim_job": {"job_id": 1},
    "next_due_in": {},
    "requeue": {"job_id": 1},
    "ensure_held": {"job_id": 1},
    "set_plan": {"job_id": 1, "plan": {}, "result": {}},
    "finish": {"job_id": 1, "state": State.DONE, "final_path": None, "outcome": "done"},
    "recover": {"unclean": True},
    "reset_retry_times": {},
    "record_response": {"sha256": "s", "variant": "v", "span": "0", "job_id": 1, "raw": {}},
    "lookup_response": {"sha256": "s", "variant": "v", "span": "0"},
    "billed": {"since": 0.0, "until": 1.0},
    "counts": {},
    "failed_files": {},
    "recent_failures": {},
    "jobs": {},
    "fleet": {},
    "shared_limiter": {"api": default_api_settings(), "key": Secret("sk-boundary")},
    "verify": {},
    "close": {},
}


def protocol_methods() -> set[str]:
    return {name for name, _ in inspect.getmembers(Ledger, inspect.isfunction)
            if not name.startswith("_")}


def test_every_protocol_method_works_on_sqlite(tmp_path: Path) -> None:
    """Each method of the protocol runs on the SQLite ledger with the arguments used below."""
    assert set(CALLS) == protocol_methods()
    ledger = open_ledger(tmp_path)
    for name, kwargs in CALLS.items():
        getattr(ledger, name)(**kwargs)


# What one host's ledger answers without its storage: the fleet's questions (no other host),
# and verify (whether the file is still the one opened, which a closed connection does not
# change).
NO_STORAGE_ON_SQLITE = {"close", "ensure_held", "fleet", "shared_limiter", "taken_elsewhere",
                        "verify"}


@pytest.mark.parametrize("name", sorted(set(CALLS) - NO_STORAGE_ON_SQLITE))
def test_a_storage_failure_is_a_ledger_error(tmp_path: Path, name: str) -> None:
    """Every method raises LedgerError, chained to the sqlite3 error, when the storage fails."""
    ledger = SqliteLedger(tmp_path)
    ledger.close()
    with pytest.raises(LedgerError) as info:
        getattr(ledger, name)(**CALLS[name])
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert "ledger.sqlite3" in str(info.value)


def test_a_file_that_is_no_database_is_a_ledger_error(tmp_path: Path) -> None:
    """Opening a ledger file that holds something else raises LedgerError naming the file."""
    (tmp_path / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=r"ledger\.sqlite3"):
        SqliteLedger(tmp_path)
