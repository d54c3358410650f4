"""The fleet ledger's connection to PostgreSQL and its boundary, and how values are stored.

One connection, one lock, short transactions in autocommit mode (each ``tx`` is one
transaction); a connection that failed is dropped and made again at the next call. Here and
nowhere else a ``psycopg`` error of the ledger's own connection becomes a ``LedgerError``
(its message redacted: the DSN is a secret; ``LedgerFullError`` when the database's disk is
full), or, for a call on a job this process holds, a lost connection becomes
``LeaseLostError`` (the process cannot show it still holds the job).
Paths are stored as the bytes the file system gave (``bytea``): names that are not UTF-8 too.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg.rows import dict_row

from mimo_watchd.config import Secret, redact
from mimo_watchd.errors import LeaseLostError, LedgerError, LedgerFullError
from mimo_watchd.ledger.interface import Job, State

Cursor = psycopg.Cursor[dict[str, Any]]


def fs_bytes(value: str | None) -> bytes | None:
    """A path as the bytes the file system gave (names that are not UTF-8 included)."""
    return None if value is None else os.fsencode(value)


def db_text(value: str | None) -> str | None:
    """A message PostgreSQL can store (its text is UTF-8 only)."""
    return None if value is None else value.encode("utf-8", "backslashreplace").decode()


def db_json(doc: Any) -> str:
    """JSON text PostgreSQL can store (ASCII escapes when a str holds bytes)."""
    text = json.dumps(doc, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(doc)
    return text


def job_of(row: dict[str, Any]) -> Job:
    """The ``Job`` a row of ``mw_jobs`` holds."""
    return Job(
        id=row["id"], watch=os.fsdecode(row["watch"]), path=os.fsdecode(row["path"]),
        size=row["size"], mtime_ns=row["mtime_ns"], sha256=row["sha256"],
        state=State(row["state"]), attempts=row["attempts"],
        interruptions=row["interruptions"], next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"], arrived_at=row["arrived_at"],
        plan=json.loads(row["plan_json"]) if row["plan_json"] else None,
        result=json.loads(row["result_json"]) if row["result_json"] else None,
        final_path=os.fsdecode(row["final_path"]) if row["final_path"] is not None else None,
        outcome=row["outcome"], updated_at=row["updated_at"])


def connection_string(dsn: Secret, *, host_id: str, lease_seconds: float) -> str:
    """The DSN with what the fleet needs where it does not say: a name in
    ``pg_stat_activity``, and timeouts that notice a dead server well within a lease."""
    given = conninfo.conninfo_to_dict(dsn.reveal())
    password = given.get("password")
    if isinstance(password, str):
        Secret(password)  # redacted from everything written, like the DSN itself
    third = max(1, int(lease_seconds / 3))
    extra: dict[str, str | int] = {
        "application_name": f"mimo-watchd {host_id}"[:63], "connect_timeout": third,
        "keepalives": 1, "keepalives_idle": third, "keepalives_interval": 1,
        "keepalives_count": 3, "tcp_user_timeout": third * 1000}
    return conninfo.make_conninfo(dsn.reveal(),
                                  **{k: v for k, v in extra.items() if k not in given})


class PgConnection:
    """The ledger's connection to the fleet's database (thread-safe: one lock)."""

    def __init__(self, dsn: str, host: str) -> None:
        self._dsn = dsn
        self.host = host
        self._lock = threading.RLock()
        self._db: psycopg.Connection[dict[str, Any]] | None = None

    @contextmanager
    def tx(self, *, on_lost: Callable[[], object] | None = None) -> Iterator[Cursor]:
        """One transaction. The boundary: a psycopg error becomes a LedgerError; with
        ``on_lost`` (a call on a held job), a lost connection calls it and becomes
        LeaseLostError."""
        with self._lock:
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(self._dsn, autocommit=True,
                                               row_factory=dict_row)
                with self._db.transaction(), self._db.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                broken = isinstance(exc, psycopg.OperationalError)
                if broken and self._db is not None:
                    self._db.close()
                    self._db = None
                reason = redact(f"{type(exc).__name__}: {exc}".strip())
                if isinstance(exc, psycopg.errors.DiskFull):
                    raise LedgerFullError(f"the fleet's database is full ({reason})") from exc
                if on_lost is not None and broken:
                    on_lost()
                    raise LeaseLostError(f"the fleet ledger cannot be reached to show this "
                                         f"process still holds the job ({reason})") from exc
                raise LedgerError(f"ledger (postgres, host {self.host}): {reason}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
