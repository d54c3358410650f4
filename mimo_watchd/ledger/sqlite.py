"""The SQLite ledger: one file in WAL mode under ``state_dir``, one connection, one lock.

Transactions are short; journaled responses and recorded plans commit with synchronous=FULL
(they must survive a power cut), everything else with NORMAL (it survives a killed process).
``sqlite3`` errors are translated into ``LedgerError`` here, at the ledger's boundary, and
nowhere else: no space left becomes ``LedgerFullError``, a file that is no (whole) database
``LedgerLostError``.

A ledger that exists is never created afresh: a new one is built under a temporary name and
linked into place whole, so an empty (0-byte) ledger file is never a ledger that was just
being made but one that was damaged, and it is refused like a corrupt one. Wait times are
kept with the delay they were meant to last, so a wall clock stepped back never stretches one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mimo_watchd.config import ApiSettings, Secret
from mimo_watchd.errors import LedgerError, LedgerFullError, LedgerLostError
from mimo_watchd.ledger.interface import Billed, Job, State
from mimo_watchd.ratelimit import RateLimiter

LEDGER_FILE = "ledger.sqlite3"
SCHEMA_VERSION = 3  # 2: jobs.interruptions; 3: jobs.retry_delay
_RECOVERY = ("stop every mimo-watchd using it, move it aside and see README, 'Recovering the "
             "ledger'")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    watch TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    retry_delay REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    error_json TEXT,
    arrived_at TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    plan_json TEXT,
    result_json TEXT,
    final_path TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS jobs_path ON jobs(path);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs(sha256, state);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS responses (
    sha256 TEXT NOT NULL,
    variant TEXT NOT NULL,
    span TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    raw TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (sha256, variant, span, job_id)
);
-- The bill of a day or a month reads the answers by the time they arrived.
CREATE INDEX IF NOT EXISTS responses_time ON responses(received_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# A queued job is due when its time has come, or when the wait left is longer than the delay it
# was meant to last: the wall clock was stepped back meanwhile (arguments: now, now).
_DUE = "(next_attempt_at<=? OR next_attempt_at-?>retry_delay) "
# A file that sits in a failed folder now: failed, and neither moved back by `retry` since nor
# gone before it was taken.
_FAILED_FILE = "state='FAILED' AND outcome='failed'"


def _text(value: str | None) -> str | bytes | None:
    """``value`` as SQLite can store it. A path whose name is not UTF-8 reaches us as a str
    holding its bytes (``surrogateescape``), which sqlite3 cannot encode: it is stored as
    those bytes (a BLOB, equal only to the same bytes), and ``_str`` gives the str back."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(value)
    return value


def _str(value: Any) -> Any:
    """What ``_text`` stored, as the str (or None) it was given."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _json(doc: Any) -> str:
    """JSON text of ``doc`` that SQLite can store (ASCII escapes when a str holds bytes)."""
    text = json.dumps(doc, ensure_ascii=False)
    return text if isinstance(_text(text), str) else json.dumps(doc)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], watch=_str(row["watch"]), path=_str(row["path"]), size=row["size"],
        mtime_ns=row["mtime_ns"], sha256=row["sha256"], state=State(row["state"]),
        attempts=row["attempts"],
        # (a reader may open a ledger an older version wrote, before a daemon upgrades it)
        interruptions=row["interruptions"] if "interruptions" in row.keys() else 0,  # noqa: SIM118
        next_attempt_at=row["next_attempt_at"],
        last_error=_str(row["last_error"]), arrived_at=row["arrived_at"],
        plan=json.loads(row["plan_json"]) if row["plan_json"] else None,
        result=json.loads(row["result_json"]) if row["result_json"] else None,
        final_path=_str(row["final_path"]), outcome=row["outcome"],
        updated_at=row["updated_at"])


class SqliteLedger:
    """The ``Ledger`` on SQLite (thread-safe: one connection, one lock, short transactions)."""

    def __init__(self, state_dir: Path, *, readonly: bool = False,
                 thorough: bool = False) -> None:
        """Opens ``state_dir``'s ledger, making a new one there if there is none (unless
        ``readonly``: then it must exist, and nothing is written, not even a WAL index).
        ``thorough`` reads every page first (``quick_check``), so that a truncated ledger is
        refused at start rather than found out mid-job."""
        self.path = state_dir / LEDGER_FILE
        self._lock = threading.RLock()
        with self._translated():
            if not readonly and not self.path.exists():
                self._create()
            st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        if st.st_size == 0:
            raise LedgerLostError(f"ledger {self.path} is empty (0 bytes): it was damaged, and "
                                  f"is not made afresh over what it knew; {_RECOVERY}")
        with self._translated():
            self._db = self._connect(readonly)
        try:
            self._prepare(readonly, thorough)
        except BaseException:
            self._db.close()
            raise

    def _prepare(self, readonly: bool, thorough: bool) -> None:
        with self._translated():
            self._db.row_factory = sqlite3.Row
            if thorough:
                problems = [r[0] for r in self._db.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise LedgerLostError(f"ledger {self.path} is corrupt ({problems[0]}): it "
                                          f"is not made afresh over what it knew; {_RECOVERY}")
            if readonly:
                return
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives a killed process (the WAL is in the OS cache); journaled responses
            # additionally commit with FULL so they survive a power cut too.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        self._migrate()

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            return sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        # Without a WAL (no daemon, stopped cleanly) the file is all there is: read it as it
        # is, creating no WAL or index file beside it; with one, read through it.
        wal = self.path.with_name(self.path.name + "-wal").exists()
        uri = f"file:{quote(str(self.path))}?mode=ro" + ("" if wal else "&immutable=1")
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None,
                               timeout=30.0)

    def _create(self) -> None:
        """Builds a new ledger under a temporary name and links it into place whole."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))
            finally:
                db.close()  # checkpoints: everything is in the file itself now
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # made meanwhile: that one counts
                os.link(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The boundary: a ``sqlite3.Error`` (or the file system's refusal while the ledger is
        made) inside becomes a ``LedgerError``."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise LedgerFullError(self._full(exc.strerror or str(exc))) from exc
            raise LedgerError(f"ledger {self.path}: {exc.strerror or exc}") from exc

    def _error(self, exc: sqlite3.Error) -> LedgerError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary == sqlite3.SQLITE_FULL:
            return LedgerFullError(self._full(str(exc)))
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return LedgerLostError(f"ledger {self.path} is corrupt ({exc}): it is not made "
                                   f"afresh over what it knew; {_RECOVERY}")
        return LedgerError(f"ledger {self.path}: {type(exc).__name__}: {exc}")

    def _full(self, detail: str) -> str:
        return (f"the state folder {self.path.parent} is full ({detail}): the ledger cannot be "
                "written; free some space there")

    def verify(self) -> None:
        """See ``Ledger.verify``: the file is still the one opened."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise LedgerLostError(f"ledger {self.path} was deleted while in use: carrying on "
                                  "without it would pay again for files already done; "
                                  f"restore it from a backup, or {_RECOVERY}") from None
        except OSError as exc:
            raise LedgerError(f"ledger {self.path}: {exc.strerror or exc}") from exc
        if (st.st_dev, st.st_ino) != self._identity:
            raise LedgerLostError(f"ledger {self.path} was replaced by another file while in "
                                  "use; restart the daemon to use the new one")

    def _migrate(self) -> None:
        """Brings a ledger written by an older version up to ``SCHEMA_VERSION``."""
        with self._tx() as db:
            columns = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            if "interruptions" not in columns:  # version 1
                db.execute("ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL "
                           "DEFAULT 0")
            if "retry_delay" not in columns:  # versions 1 and 2
                db.execute("ALTER TABLE jobs ADD COLUMN retry_delay REAL NOT NULL DEFAULT 0")
                db.execute("UPDATE jobs SET retry_delay=MAX(0, next_attempt_at-updated_at) "
                           "WHERE state='QUEUED'")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock, self._translated():
            self._db.close()

    @contextmanager
    def _tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated():
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (no space for the WAL): an open transaction would
                # refuse every later one, even once space is back.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, self._translated():
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Job | None:
        rows = self._rows(sql + " LIMIT 1", args)
        return _job(rows[0]) if rows else None

    def get(self, job_id: int) -> Job | None:
        """The job with this id, if any."""
        return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    # --- intake -------------------------------------------------------------------------

    def active_for_path(self, path: str) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE path=? AND state IN ('QUEUED','PROCESSING') "
                         "ORDER BY id DESC", (_text(path),))

    def enqueue(self, *, watch: str, path: str, size: int, mtime_ns: int, sha256: str,
                arrived_at: str) -> Job:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id, state FROM jobs WHERE path=? AND state IN "
                             "('QUEUED','PROCESSING') ORDER BY id DESC LIMIT 1",
                             (_text(path),)).fetchone()
            if row is not None and row["state"] == State.QUEUED:
                # The file changed while waiting: keep one job, with the new identity.
                db.execute("UPDATE jobs SET size=?, mtime_ns=?, sha256=?, updated_at=?, "
                           "plan_json=NULL WHERE id=?", (size, mtime_ns, sha256, now, row["id"]))
                job_id = row["id"]
            else:
                cur = db.execute(
                    "INSERT INTO jobs (watch, path, size, mtime_ns, sha256, state, arrived_at, "
                    "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (_text(watch), _text(path), size, mtime_ns, sha256, str(State.QUEUED),
                     arrived_at, now, now))
                job_id = cur.lastrowid
        job = self.get(int(job_id or 0))
        assert job is not None
        return job

    def done_with_content(self, sha256: str, *, exclude_id: int | None = None) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE sha256=? AND state='DONE' AND id IS NOT ? "
                         "AND result_json IS NOT NULL ORDER BY id DESC", (sha256, exclude_id))

    def taken_elsewhere(self, job: Job) -> Job | None:
        """One daemon owns this ledger: nobody else moves its files."""
        return None

    # --- the work loop ------------------------------------------------------------------

    def claim(self, now: float | None = None, *, one_per_content: bool = True) -> Job | None:
        """See ``Ledger.claim``. Two copies arriving together are paid for once: the second
        waits, then reuses the first's journaled responses or result.

        A job that was running when the daemon died (``interruptions`` > 0) waits until nothing
        else is processing, and nothing else is taken while it runs. A later crash is then its
        own, and the files that merely shared the daemon with a file that crashes it are never
        counted again with it.
        """
        now = time.time() if now is None else now
        busy = ("AND sha256 NOT IN (SELECT sha256 FROM jobs WHERE state='PROCESSING') "
                if one_per_content else "")
        with self._tx() as db:
            running = db.execute("SELECT COUNT(*) AS n, MAX(interruptions) AS worst FROM jobs "
                                 "WHERE state='PROCESSING'").fetchone()
            if running["n"] and running["worst"] > 0:
                return None  # a suspect runs alone
            row = db.execute("SELECT id, interruptions FROM jobs WHERE state='QUEUED' AND "
                             + _DUE + busy + "ORDER BY next_attempt_at, id LIMIT 1",
                             (now, now)).fetchone()
            if row is None or (row["interruptions"] > 0 and running["n"]):
                return None  # (a suspect is next: let the others finish first)
            db.execute("UPDATE jobs SET state='PROCESSING', attempts=attempts+1, updated_at=? "
                       "WHERE id=?", (now, row["id"]))
        return self.get(row["id"])

    def claim_job(self, job_id: int) -> Job | None:
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state='PROCESSING', attempts=attempts+1, "
                             "updated_at=? WHERE id=? AND state='QUEUED'", (time.time(), job_id))
            if cur.rowcount == 0:
                return None
        return self.get(job_id)

    def next_due_in(self, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        (row,) = self._rows("SELECT MIN(CASE WHEN next_attempt_at-?>retry_delay THEN ? ELSE "
                            "next_attempt_at END) AS t FROM jobs WHERE state='QUEUED'",
                            (now, now))
        if row["t"] is None:
            return None
        return max(0.0, float(row["t"]) - now)

    def requeue(self, job_id: int, *, delay: float = 0.0, error: str | None = None,
                refund_attempt: bool = False) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='QUEUED', next_attempt_at=?, retry_delay=?, "
                       "last_error=?, attempts=MAX(0, attempts-?), updated_at=? WHERE id=?",
                       (now + delay, delay, _text(error), 1 if refund_attempt else 0, now,
                        job_id))

    def ensure_held(self, job_id: int, seconds: float = 0.0) -> None:
        """One daemon owns this ledger (the state folder's lock): its jobs stay its own."""

    def set_plan(self, job_id: int, plan: dict[str, Any], result: dict[str, Any]) -> None:
        with self._tx(durable=True) as db:
            db.execute("UPDATE jobs SET plan_json=?, result_json=?, updated_at=? WHERE id=?",
                       (json.dumps(plan), _json(result), time.time(), job_id))

    def finish(self, job_id: int, state: State, *, final_path: str | None, outcome: str,
               error: str | None = None, error_doc: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state=?, final_path=?, outcome=?, last_error=?, "
                       "error_json=?, updated_at=? WHERE id=?",
                       (str(state), _text(final_path), outcome, _text(error),
                        _json(error_doc) if error_doc else None,
                        time.time(), job_id))

    def recover(self, *, unclean: bool) -> int:
        """See ``Ledger.recover``.

        At start (``unclean``: the previous daemon died mid-job, by a crash, an out-of-memory
        kill or kill -9) each such job counts one interruption more; the count is cleared when
        the job journals a response. A file that kills the daemon every time is failed once the
        count reaches ``max_interruptions`` instead of crashing it forever. At a clean stop
        (drain timeout) nothing is counted. The jobs queue behind the jobs that were waiting
        (due now, not at 0), so a file that cannot finish between two crashes does not starve
        the others.
        """
        now = time.time()
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state='QUEUED', next_attempt_at=?, retry_delay=0, "
                             "attempts=MAX(0, attempts-1), interruptions=interruptions+?, "
                             "updated_at=? WHERE state='PROCESSING'",
                             (now, 1 if unclean else 0, now))
            return cur.rowcount

    def reset_retry_times(self) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET next_attempt_at=0, retry_delay=0 WHERE state='QUEUED'")

    # --- the journal --------------------------------------------------------------------

    def record_response(self, *, sha256: str, variant: str, span: str, job_id: int,
                        raw: dict[str, Any]) -> None:
        with self._tx(durable=True) as db:
            db.execute("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?)",
                       (sha256, variant, span, job_id, _json(raw), time.time()))
            # Progress: earlier interruptions were not this file's fault.
            db.execute("UPDATE jobs SET interruptions=0 WHERE id=? AND interruptions>0",
                       (job_id,))

    def lookup_response(self, *, sha256: str, variant: str, span: str,
                        job_id: int | None = None) -> dict[str, Any] | None:
        sql = "SELECT raw FROM responses WHERE sha256=? AND variant=? AND span=?"
        args: tuple[Any, ...] = (sha256, variant, span)
        if job_id is not None:
            sql += " AND job_id=?"
            args += (job_id,)
        rows = self._rows(sql + " ORDER BY received_at DESC LIMIT 1", args)
        return json.loads(rows[0]["raw"]) if rows else None

    def billed(self, since: float, until: float) -> Billed:
        (row,) = self._rows(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN typeof(s) IN ('integer','real') AND "
            "s>=0 THEN s END), 0) AS seconds, COALESCE(SUM(CASE WHEN typeof(s) IN "
            "('integer','real') AND s>=0 THEN 0 ELSE 1 END), 0) AS unknown FROM (SELECT "
            "json_extract(raw, '$.usage.seconds') AS s FROM responses WHERE received_at>=? AND "
            "received_at<?)", (since, until))
        return Billed(seconds=row["seconds"], answers=row["n"], unknown=row["unknown"])

    # --- reporting ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        found = {r["state"]: r["n"]
                 for r in self._rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
        return {s.value: found.get(s.value, 0) for s in State}

    def failed_files(self) -> int:
        (row,) = self._rows("SELECT COUNT(*) AS n FROM jobs WHERE " + _FAILED_FILE)
        return int(row["n"])

    def recent_failures(self, limit: int = 10) -> list[Job]:
        return [_job(r) for r in self._rows("SELECT * FROM jobs WHERE " + _FAILED_FILE +
                                            " ORDER BY updated_at DESC, id DESC LIMIT ?",
                                            (limit,))]

    def jobs(self, state: State | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs", tuple[str, ...]()
        if state is not None:
            sql, args = sql + " WHERE state=?", (str(state),)
        return [_job(r) for r in self._rows(sql + " ORDER BY id", args)]

    def fleet(self) -> dict[str, Any] | None:
        """A ledger of one host."""
        return None

    def shared_limiter(self, api: ApiSettings, key: Secret) -> RateLimiter | None:
        """One host: each client limits itself."""
        return None
