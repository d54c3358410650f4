"""The PostgreSQL ledger: one database shared by a fleet of daemons (``ledger.backend: postgres``).

Jobs, the journal of paid answers and the claims are shared (``pgschema``); watching,
settling, temp files and metrics stay local. A job may be run by any host whose watch holds
its file (``seen_by``). Running it takes the *claim* on its content: a lease with a fencing
number (``leases``). Recording the plan and finishing require the current fence; before every
request and every write the job's runner checks, through ``ensure_held``, that the lease still
covers what it is about to do (extending it to cover a request's whole deadline). A job whose
holder died or froze is taken over once the lease has expired, by whichever host claims it
next, and resumes its recorded plan, reusing the journaled answers. The journal is written
insert-if-absent whoever holds the lease: what was paid for is never lost.

``psycopg`` errors become ``LedgerError`` at the boundary (``pgconn``; the keeper's own
connection here); an operation on a held job that cannot reach the database becomes
``LeaseLostError``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg

from mimo_watchd.config import ApiSettings, LedgerSettings, Secret, redact, resolve_dsn
from mimo_watchd.errors import LeaseLostError, LedgerError
from mimo_watchd.ledger import pghosts
from mimo_watchd.ledger.interface import Billed, Job, State
from mimo_watchd.ledger.leases import Held, Holdings, Keeper
from mimo_watchd.ledger.pgconn import (
    Cursor,
    PgConnection,
    connection_string,
    db_json,
    db_text,
    fs_bytes,
    job_of,
)
from mimo_watchd.ledger.pglimit import SharedRateLimiter, account_of
from mimo_watchd.ledger.pgschema import NOW, NewerSchemaError, migrate

_ACTIVE = "state IN ('QUEUED', 'PROCESSING')"
# A file that sits in a failed folder now: failed, and neither moved back by `retry` since nor
# gone before it was taken (as the SQLite ledger counts them).
_FAILED_FILE = "state = 'FAILED' AND outcome = 'failed'"
# A held job's row, under this process's claim that has not expired (the fence check).
_FENCED = ("id = %(id)s AND owner = %(me)s AND fence = %(fence)s AND EXISTS (SELECT 1 FROM "
           "mw_claims c WHERE c.sha256 = mw_jobs.sha256 AND c.owner = %(me)s AND c.fence = "
           "%(fence)s AND c.expires_at > clock_timestamp())")
_LIVE_CLAIM = ("EXISTS (SELECT 1 FROM mw_claims c WHERE c.sha256 = j.sha256 AND c.owner IS "
               "NOT NULL AND c.expires_at > clock_timestamp())")


class PostgresLedger:
    """The ``Ledger`` on PostgreSQL, for a fleet (thread-safe: one connection, one lock)."""

    def __init__(self, dsn: Secret, *, host_id: str, lease_seconds: float,
                 state_dir: Path) -> None:
        self.host = host_id
        self.owner = f"{host_id}#{os.getpid()}#{secrets.token_hex(4)}"
        self.lease = lease_seconds
        self.state_dir = state_dir
        self._dsn = connection_string(dsn, host_id=host_id, lease_seconds=lease_seconds)
        self._db = PgConnection(self._dsn, host_id)
        self.held = Holdings()
        self._keeper: Keeper | None = None
        self._registered = False
        try:
            with self._tx() as cur:
                migrate(cur)
        except NewerSchemaError as exc:
            self.close()
            raise LedgerError(f"ledger (postgres): {exc}") from exc
        except LedgerError:
            self.close()
            raise

    # --- the connection ------------------------------------------------------------------

    def _tx(self, *, held: int | None = None) -> AbstractContextManager[Cursor]:
        """A transaction; for a call on the held job ``held``, a lost connection loses it."""
        if held is None:
            return self._db.tx()
        return self._db.tx(on_lost=lambda: self.held.pop(held))

    def _rows(self, sql: str, args: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._tx() as cur:
            cur.execute(sql, {"me": self.owner, "host": self.host, **(args or {})})
            return cur.fetchall()

    def _one(self, sql: str, args: dict[str, Any] | None = None) -> Job | None:
        rows = self._rows(sql + " LIMIT 1", args)
        return job_of(rows[0]) if rows else None

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
        self._db.close()

    def get(self, job_id: int) -> Job | None:
        """The job with this id, if any."""
        return self._one("SELECT * FROM mw_jobs WHERE id = %(id)s", {"id": job_id})

    # --- intake -------------------------------------------------------------------------

    def active_for_path(self, path: str) -> Job | None:
        """The active job of this path that this host has seen (another host's sighting of
        the same shared file is joined by ``enqueue``)."""
        return self._one(f"SELECT * FROM mw_jobs WHERE path = %(path)s AND {_ACTIVE} AND "
                         "%(host)s = ANY(seen_by) ORDER BY id DESC", {"path": fs_bytes(path)})

    def enqueue(self, *, watch: str, path: str, size: int, mtime_ns: int, sha256: str,
                arrived_at: str) -> Job:
        """See ``Ledger.enqueue``. A file another host already queued (a shared inbox: the
        same place, the same content) joins that job: this host may run it too. A queued file
        of this host's whose content changed keeps one job, with the new identity, seen by this
        host alone until the others see it too. Another host's job for the same place with
        other content (inboxes of their own under one path) is left alone."""
        args = {"watch": fs_bytes(watch), "path": fs_bytes(path), "size": size,
                "mtime_ns": mtime_ns, "sha256": sha256, "arrived_at": arrived_at,
                "host": self.host}
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(encode(%(path)s, "
                        "'hex'), 0))", args)  # hosts seeing one new file queue it once
            cur.execute(f"SELECT id, state, sha256, seen_by FROM mw_jobs WHERE watch = "
                        f"%(watch)s AND path = %(path)s AND {_ACTIVE} ORDER BY id DESC", args)
            rows = cur.fetchall()
            same = next((r for r in rows if r["sha256"] == sha256), None)
            changed = next((r for r in rows if r["state"] == State.QUEUED
                            and self.host in r["seen_by"]), None)
            if same is not None:
                cur.execute("UPDATE mw_jobs SET seen_by = array_append(seen_by, %(host)s) "
                            "WHERE id = %(id)s AND NOT %(host)s = ANY(seen_by)",
                            {**args, "id": same["id"]})
                job_id = same["id"]
            elif changed is not None:
                cur.execute(f"UPDATE mw_jobs SET size = %(size)s, mtime_ns = %(mtime_ns)s, "
                            f"sha256 = %(sha256)s, seen_by = ARRAY[%(host)s], plan_json = NULL, "
                            f"updated_at = {NOW} WHERE id = %(id)s",
                            {**args, "id": changed["id"]})
                job_id = changed["id"]
            else:
                cur.execute(f"INSERT INTO mw_jobs (watch, path, size, mtime_ns, sha256, state, "
                            f"arrived_at, created_at, updated_at, seen_by) VALUES (%(watch)s, "
                            f"%(path)s, %(size)s, %(mtime_ns)s, %(sha256)s, 'QUEUED', "
                            f"%(arrived_at)s, {NOW}, {NOW}, ARRAY[%(host)s]) RETURNING id", args)
                job_id = cur.fetchone()["id"]  # type: ignore[index]
        job = self.get(job_id)
        assert job is not None
        return job

    def done_with_content(self, sha256: str, *, exclude_id: int | None = None) -> Job | None:
        return self._one("SELECT * FROM mw_jobs WHERE sha256 = %(sha)s AND state = 'DONE' AND "
                         "id IS DISTINCT FROM %(ex)s AND result_json IS NOT NULL "
                         "ORDER BY id DESC", {"sha": sha256, "ex": exclude_id})

    def taken_elsewhere(self, job: Job) -> Job | None:
        """The job that already finished this very file (same place, same content): a file
        another host moved is not a failure here."""
        return self._one("SELECT * FROM mw_jobs WHERE watch = %(watch)s AND path = %(path)s "
                         "AND sha256 = %(sha)s AND id <> %(id)s AND state IN ('DONE', 'FAILED') "
                         "AND final_path IS NOT NULL AND coalesce(outcome, '') NOT IN "
                         "('vanished', 'elsewhere', 'retried') ORDER BY id DESC",
                         {"watch": fs_bytes(job.watch), "path": fs_bytes(job.path),
                          "sha": job.sha256, "id": job.id})

    # --- claims -------------------------------------------------------------------------

    def _take_claim(self, cur: Cursor, sha256: str,
                    job_id: int) -> bool:
        """Takes the claim on ``sha256`` for ``job_id`` unless another holds a live one."""
        started = time.monotonic()
        cur.execute("INSERT INTO mw_claims AS c (sha256, fence, owner, host, job_id, "
                    "expires_at) VALUES (%(sha)s, 1, %(me)s, %(host)s, %(id)s, "
                    "clock_timestamp() + make_interval(secs => %(lease)s)) "
                    "ON CONFLICT (sha256) DO UPDATE SET fence = c.fence + 1, owner = "
                    "EXCLUDED.owner, host = EXCLUDED.host, job_id = EXCLUDED.job_id, "
                    "expires_at = EXCLUDED.expires_at WHERE c.owner IS NULL OR c.expires_at <= "
                    "clock_timestamp() RETURNING fence, extract(epoch from expires_at - "
                    "clock_timestamp()) AS left",
                    {"sha": sha256, "me": self.owner, "host": self.host, "id": job_id,
                     "lease": self.lease})
        row = cur.fetchone()
        if row is None:
            return False
        self.held.add(job_id, Held(sha256, row["fence"], started + float(row["left"])))
        if self._keeper is None:
            self._keeper = Keeper(self.renew, self.lease / 3)
        return True

    def _release(self, cur: Cursor, job_id: int) -> None:
        held = self.held.pop(job_id)
        if held is not None:
            cur.execute("UPDATE mw_claims SET owner = NULL, expires_at = clock_timestamp() "
                        "WHERE sha256 = %s AND owner = %s AND fence = %s",
                        (held.sha256, self.owner, held.fence))

    def claim(self, now: float | None = None, *, one_per_content: bool = True) -> Job | None:
        """See ``Ledger.claim``, for the fleet: the oldest due job this host has seen whose
        content nobody holds (its holder's lease expired: a takeover, counted as an
        interruption), by the database's clock (``now`` is not used). A content is held by
        one process at a time whatever ``one_per_content`` says. A job with interruptions
        runs alone in this process."""
        with self._tx() as cur:
            cur.execute("SELECT count(*) AS n, coalesce(max(interruptions), 0) AS worst FROM "
                        "mw_jobs WHERE owner = %s AND state = 'PROCESSING'", (self.owner,))
            running = cur.fetchone()
            assert running is not None
            if running["n"] and running["worst"] > 0:
                return None  # a suspect runs alone
            cur.execute(f"SELECT j.id, j.sha256, j.state, j.interruptions FROM mw_jobs j WHERE "
                        f"%(host)s = ANY(j.seen_by) AND ((j.state = 'QUEUED' AND "
                        f"j.next_attempt_at <= {NOW}) OR (j.state = 'PROCESSING' AND NOT "
                        f"j.id = ANY(%(mine)s))) AND NOT {_LIVE_CLAIM} ORDER BY "
                        f"j.next_attempt_at, j.id LIMIT 8 FOR UPDATE OF j SKIP LOCKED",
                        {"host": self.host, "mine": self.held.ids()})
            for row in cur.fetchall():
                if row["interruptions"] > 0 and running["n"]:
                    return None  # (a suspect is next: let the others finish first)
                if not self._take_claim(cur, row["sha256"], row["id"]):
                    continue  # taken by another host since the select
                taken_over = row["state"] == State.PROCESSING
                cur.execute(
                    f"UPDATE mw_jobs SET state = 'PROCESSING', owner = %(me)s, owner_host = "
                    f"%(host)s, fence = %(fence)s, attempts = attempts + %(new)s, "
                    f"interruptions = interruptions + %(over)s, updated_at = {NOW} "
                    f"WHERE id = %(id)s",
                    {"me": self.owner, "host": self.host, "id": row["id"],
                     "fence": self._fence(row["id"]), "new": 0 if taken_over else 1,
                     "over": 1 if taken_over else 0})
                break
            else:
                return None
        return self.get(row["id"])

    def _fence(self, job_id: int) -> int:
        held = self.held.get(job_id)
        assert held is not None
        return held.fence

    def claim_job(self, job_id: int) -> Job | None:
        with self._tx() as cur:
            cur.execute("SELECT sha256 FROM mw_jobs WHERE id = %(id)s AND state = 'QUEUED' "
                        "AND %(host)s = ANY(seen_by) FOR UPDATE SKIP LOCKED",
                        {"id": job_id, "host": self.host})
            row = cur.fetchone()
            if row is None or not self._take_claim(cur, row["sha256"], job_id):
                return None
            cur.execute(f"UPDATE mw_jobs SET state = 'PROCESSING', owner = %(me)s, owner_host "
                        f"= %(host)s, fence = %(fence)s, attempts = attempts + 1, updated_at = "
                        f"{NOW} WHERE id = %(id)s",
                        {"me": self.owner, "host": self.host, "id": job_id,
                         "fence": self._fence(job_id)})
        return self.get(job_id)

    def ensure_held(self, job_id: int, seconds: float = 0.0) -> None:
        """Raises LeaseLostError unless this process holds the job's claim for ``seconds``
        more, extending the lease to cover them (a request in flight outlives no lease); one
        round trip to the database, so nothing is sent while it cannot be reached."""
        held = self.held.get(job_id)
        if held is None or held.remaining() <= 0:
            self.held.pop(job_id)
            raise LeaseLostError("this process's claim on the job expired (it was frozen or "
                                 "cut off from the database longer than ledger.lease_seconds)")
        started = time.monotonic()
        with self._tx(held=job_id) as cur:
            cur.execute("UPDATE mw_claims SET expires_at = greatest(expires_at, "
                        "clock_timestamp() + make_interval(secs => %s)) WHERE sha256 = %s AND "
                        "owner = %s AND fence = %s AND expires_at > clock_timestamp() RETURNING "
                        "extract(epoch from expires_at - clock_timestamp()) AS left",
                        (seconds + self.lease, held.sha256, self.owner, held.fence))
            row = cur.fetchone()
        if row is None:
            self.held.pop(job_id)
            raise LeaseLostError("another process holds the claim on this job now")
        held.valid_until = max(held.valid_until, started + float(row["left"]))

    def renew(self) -> None:
        """The keeper's round: every held claim extended by a lease, the host's heartbeat.

        On a connection of its own, so a query stuck on the main one never delays it."""
        self.held.expire()
        started = time.monotonic()
        try:
            with psycopg.connect(self._dsn, autocommit=True) as db:
                rows = db.execute(
                    "UPDATE mw_claims SET expires_at = greatest(expires_at, clock_timestamp() "
                    "+ make_interval(secs => %s)) WHERE owner = %s AND expires_at > "
                    "clock_timestamp() RETURNING sha256, fence, extract(epoch from expires_at "
                    "- clock_timestamp())", (self.lease, self.owner)).fetchall()
                if self._registered:
                    pghosts.heartbeat(db, self.host, self.owner)
        except psycopg.Error as exc:
            raise LedgerError(f"ledger (postgres, host {self.host}): renewing the claims: "
                              f"{redact(str(exc))}") from exc
        self.held.renewed(started, {(sha, fence): float(left) for sha, fence, left in rows})

    # --- the work loop ------------------------------------------------------------------

    def next_due_in(self, now: float | None = None) -> float | None:
        (row,) = self._rows(f"SELECT min(next_attempt_at) - {NOW} AS due FROM mw_jobs WHERE "
                            "state = 'QUEUED' AND %(host)s = ANY(seen_by)")
        return None if row["due"] is None else max(0.0, float(row["due"]))

    def requeue(self, job_id: int, *, delay: float = 0.0, error: str | None = None,
                refund_attempt: bool = False) -> None:
        """See ``Ledger.requeue``; nothing happens when this process no longer holds the job
        (another has taken it over)."""
        held = self.held.get(job_id)
        if held is None:
            return
        with self._tx(held=job_id) as cur:
            cur.execute(f"UPDATE mw_jobs SET state = 'QUEUED', next_attempt_at = {NOW} + "
                        f"%(delay)s, last_error = %(error)s, attempts = greatest(0, attempts - "
                        f"%(refund)s), owner = NULL, owner_host = NULL, fence = NULL, "
                        f"updated_at = {NOW} WHERE {_FENCED}",
                        {"id": job_id, "me": self.owner, "fence": held.fence, "delay": delay,
                         "error": db_text(error), "refund": 1 if refund_attempt else 0})
            self._release(cur, job_id)

    def set_plan(self, job_id: int, plan: dict[str, Any], result: dict[str, Any]) -> None:
        """See ``Ledger.set_plan``; LeaseLostError unless this process holds the job."""
        self._fenced(job_id, "plan_json = %(plan)s, result_json = %(result)s",
                     {"plan": json.dumps(plan), "result": db_json(result)})

    def _fenced(self, job_id: int, assignments: str, args: dict[str, Any], *,
                release: bool = False) -> None:
        held = self.held.get(job_id)
        if held is None:
            raise LeaseLostError("this process does not hold the job")
        with self._tx(held=job_id) as cur:
            cur.execute(f"UPDATE mw_jobs SET {assignments}, updated_at = {NOW} WHERE {_FENCED}",
                        {**args, "id": job_id, "me": self.owner, "fence": held.fence})
            if cur.rowcount == 0:
                self.held.pop(job_id)
                raise LeaseLostError("another process holds the claim on this job now")
            if release:
                self._release(cur, job_id)

    def finish(self, job_id: int, state: State, *, final_path: str | None, outcome: str,
               error: str | None = None, error_doc: dict[str, Any] | None = None) -> None:
        """See ``Ledger.finish``: for a held job, under its fence (LeaseLostError otherwise),
        releasing the claim; a finished job (``retry`` marking it) needs no claim."""
        args = {"state": str(state), "final": fs_bytes(final_path), "outcome": outcome,
                "error": db_text(error), "doc": db_json(error_doc) if error_doc else None}
        sets = ("state = %(state)s, final_path = %(final)s, outcome = %(outcome)s, last_error "
                "= %(error)s, error_json = %(doc)s, owner = NULL, owner_host = NULL")
        if self.held.get(job_id) is not None:
            self._fenced(job_id, sets, args, release=True)
            return
        with self._tx() as cur:
            cur.execute(f"UPDATE mw_jobs SET {sets}, updated_at = {NOW} WHERE id = %(id)s AND "
                        "state IN ('DONE', 'FAILED')", {**args, "id": job_id})
            if cur.rowcount == 0:
                raise LeaseLostError("this process does not hold the job")

    def recover(self, *, unclean: bool) -> int:
        """See ``Ledger.recover``, for this host only: at start (``unclean``) the jobs a
        previous life of this daemon left PROCESSING go back to the queue and their claims
        are released at once (this daemon holds its state folder's lock: that life is over);
        at a clean stop, this process's own. Another host's jobs are never touched here: they
        are taken over once their leases expire.

        At start the daemon also joins the fleet (``mw_hosts``); LedgerError when a live
        daemon with another state folder already uses this ``host_id``."""
        with self._tx() as cur:
            if unclean:
                self._register(cur)
                who = "mw_jobs.owner_host = %(host)s AND mw_jobs.owner <> %(me)s"
            else:
                who = "mw_jobs.owner = %(me)s"
                pghosts.stopped(cur, self.host, self.owner)
            args = {"host": self.host, "me": self.owner, "over": 1 if unclean else 0}
            # The job rows first, then the claims: the order every other call locks them in.
            cur.execute(f"UPDATE mw_jobs SET state = 'QUEUED', next_attempt_at = {NOW}, "
                        f"attempts = greatest(0, attempts - 1), interruptions = interruptions "
                        f"+ %(over)s, owner = NULL, owner_host = NULL, fence = NULL, updated_at "
                        f"= {NOW} FROM (SELECT id, owner AS was FROM mw_jobs WHERE state = "
                        f"'PROCESSING' AND {who} FOR UPDATE) AS old WHERE mw_jobs.id = old.id "
                        f"RETURNING mw_jobs.sha256, old.was", args)
            released = [(row["sha256"], row["was"]) for row in cur.fetchall()]
            for sha256, was in released:
                cur.execute("UPDATE mw_claims SET owner = NULL, expires_at = clock_timestamp() "
                            "WHERE sha256 = %s AND owner = %s", (sha256, was))
            count = len(released)
        if not unclean:
            for job_id in self.held.ids():
                self.held.pop(job_id)
        return count

    def _register(self, cur: Cursor) -> None:
        pghosts.register(cur, self.host, self.owner, self.state_dir, self.lease)
        self._registered = True
        if self._keeper is None:
            self._keeper = Keeper(self.renew, self.lease / 3)

    def reset_retry_times(self) -> None:
        self._rows("UPDATE mw_jobs SET next_attempt_at = 0 WHERE state = 'QUEUED' AND "
                   "%(host)s = ANY(seen_by) RETURNING id")

    # --- the journal --------------------------------------------------------------------

    def record_response(self, *, sha256: str, variant: str, span: str, job_id: int,
                        raw: dict[str, Any]) -> None:
        """See ``Ledger.record_response``: insert-if-absent, whoever holds the job now (a paid
        answer is kept for whoever takes it over). A connection lost meanwhile is tried again
        for a third of a lease: this answer has been paid for."""
        args = (sha256, variant, span, job_id, db_json(raw), self.host)
        deadline = time.monotonic() + self.lease / 3
        while True:
            try:
                with self._tx() as cur:
                    cur.execute(f"INSERT INTO mw_responses VALUES (%s, %s, %s, %s, %s, {NOW}, "
                                f"%s) ON CONFLICT DO NOTHING", args)
                    cur.execute("UPDATE mw_jobs SET interruptions = 0 WHERE id = %s AND "
                                "interruptions > 0", (job_id,))
                return
            except LedgerError as exc:
                if (not isinstance(exc.__cause__, psycopg.OperationalError)
                        or time.monotonic() > deadline):
                    raise
                time.sleep(0.5)

    def lookup_response(self, *, sha256: str, variant: str, span: str,
                        job_id: int | None = None) -> dict[str, Any] | None:
        mine = "" if job_id is None else " AND job_id = %(id)s"
        rows = self._rows("SELECT raw FROM mw_responses WHERE sha256 = %(sha)s AND variant = "
                          f"%(variant)s AND span = %(span)s{mine} ORDER BY received_at DESC "
                          "LIMIT 1", {"sha": sha256, "variant": variant, "span": span,
                                      "id": job_id})
        return json.loads(rows[0]["raw"]) if rows else None

    def billed(self, since: float, until: float) -> Billed:
        """See ``Ledger.billed``: the account's bill, every host's answers in it."""
        (row,) = self._rows(
            "SELECT count(*) AS n, coalesce(sum(s) FILTER (WHERE s >= 0), 0) AS seconds, "
            "count(*) FILTER (WHERE s IS NULL OR s < 0) AS unknown FROM (SELECT CASE WHEN "
            "jsonb_typeof(raw::jsonb -> 'usage' -> 'seconds') = 'number' THEN (raw::jsonb -> "
            "'usage' ->> 'seconds')::float8 END AS s FROM mw_responses WHERE received_at >= "
            "%(since)s AND received_at < %(until)s) AS answers", {"since": since, "until": until})
        return Billed(seconds=float(row["seconds"]), answers=int(row["n"]),
                      unknown=int(row["unknown"]))

    # --- reporting ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Jobs per state among those this host has seen (its share of the fleet's queue); a
        job that found its file finished by another (``elsewhere``) is not counted: the file
        is, once, with that other job."""
        found = {r["state"]: r["n"] for r in self._rows(
            "SELECT state, count(*) AS n FROM mw_jobs WHERE %(host)s = ANY(seen_by) AND "
            "outcome IS DISTINCT FROM 'elsewhere' GROUP BY state")}
        return {s.value: found.get(s.value, 0) for s in State}

    def failed_files(self) -> int:
        (row,) = self._rows(f"SELECT count(*) AS n FROM mw_jobs WHERE {_FAILED_FILE} AND "
                            "%(host)s = ANY(seen_by)")
        return int(row["n"])

    def recent_failures(self, limit: int = 10) -> list[Job]:
        return [job_of(r) for r in self._rows(
            f"SELECT * FROM mw_jobs WHERE {_FAILED_FILE} AND %(host)s = ANY(seen_by) "
            "ORDER BY updated_at DESC, id DESC LIMIT %(limit)s", {"limit": limit})]

    def jobs(self, state: State | None = None) -> list[Job]:
        which = "" if state is None else " AND state = %(state)s"
        return [job_of(r) for r in self._rows(
            f"SELECT * FROM mw_jobs WHERE %(host)s = ANY(seen_by){which} ORDER BY id",
            {"state": str(state) if state else None})]

    def verify(self) -> None:
        """A database is no file that can be deleted or swapped under the daemon; a lost
        connection is reported by the next call."""

    def shared_limiter(self, api: ApiSettings, key: Secret) -> SharedRateLimiter:
        """The account's rate limiter, its windows in this database (one budget per account,
        told apart by a hash of its key)."""
        return SharedRateLimiter(self._dsn, account_of(key), api.requests_per_minute,
                                 api.tokens_per_minute, host=self.host, counts=api.tpm_counts,
                                 max_in_flight=api.max_concurrency)

    def fleet(self) -> dict[str, Any]:
        """The fleet as ``status`` shows it (``pghosts.report``)."""
        with self._tx() as cur:
            return pghosts.report(cur, self.lease)


def open_postgres(ledger: LedgerSettings, state_dir: Path) -> PostgresLedger:
    """The fleet ledger the settings name (the DSN found as ``config.resolve_dsn`` says)."""
    return PostgresLedger(resolve_dsn(ledger), host_id=ledger.host_id or socket.gethostname(),
                          lease_seconds=ledger.lease_seconds, state_dir=state_dir)
