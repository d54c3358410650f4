"""The fleet ledger's tables in PostgreSQL, created and migrated by the daemon (versioned).

Every table is prefixed ``mw_`` so the ledger can share a database (and a schema: the DSN's
``search_path`` chooses it) with other applications. Times are the database's clock (seconds
since the epoch), so hosts whose clocks disagree still agree on what is due and what expired.

- ``mw_jobs``: one row per file and arrival, shared by the fleet; ``seen_by`` lists the hosts
  whose watch holds that file (only they may run it: a shared inbox is seen by all, an inbox of
  one's own by one); ``owner``/``fence`` say which process runs it, under which claim.
- ``mw_claims``: one row per content (sha256): who holds it and until when (``expires_at``),
  and ``fence``, which grows with every new holder, so a holder that lost its lease can never
  record anything again.
- ``mw_responses``: the journal of paid answers, shared, written insert-if-absent.
- ``mw_window``, ``mw_hold``: the account's rate-limit windows, shared (``pglimit``).
- ``mw_hosts``: the daemons of the fleet, their last heartbeat (``status`` shows them).
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
_LOCK_KEY = 0x6D775F73636865  # pg_advisory_xact_lock: one daemon creates or migrates at a time

NOW = "extract(epoch from clock_timestamp())"  # the database's clock, in seconds

_TABLES = """
CREATE TABLE IF NOT EXISTS mw_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS mw_jobs (
    id bigserial PRIMARY KEY,
    watch bytea NOT NULL,
    path bytea NOT NULL,
    size bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    sha256 text NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    interruptions integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL DEFAULT 0,
    last_error text,
    error_json text,
    arrived_at text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    plan_json text,
    result_json text,
    final_path bytea,
    outcome text,
    seen_by text[] NOT NULL,
    owner text,
    owner_host text,
    fence bigint
);
CREATE INDEX IF NOT EXISTS mw_jobs_path ON mw_jobs (path);
CREATE INDEX IF NOT EXISTS mw_jobs_sha ON mw_jobs (sha256, state);
CREATE INDEX IF NOT EXISTS mw_jobs_state ON mw_jobs (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS mw_claims (
    sha256 text PRIMARY KEY,
    fence bigint NOT NULL,
    owner text,
    host text,
    job_id bigint,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS mw_responses (
    sha256 text NOT NULL,
    variant text NOT NULL,
    span text NOT NULL,
    job_id bigint NOT NULL,
    raw text NOT NULL,
    received_at double precision NOT NULL,
    host text NOT NULL,
    PRIMARY KEY (sha256, variant, span, job_id)
);
CREATE TABLE IF NOT EXISTS mw_window (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    at timestamptz NOT NULL,
    tokens integer NOT NULL,
    host text NOT NULL
);
CREATE INDEX IF NOT EXISTS mw_window_account ON mw_window (account, at);
CREATE TABLE IF NOT EXISTS mw_hold (account text PRIMARY KEY, held_until timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS mw_hosts (
    host_id text PRIMARY KEY,
    owner text NOT NULL,
    pid integer NOT NULL,
    state_dir text NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL,
    stopped boolean NOT NULL DEFAULT false
);
"""


class NewerSchemaError(Exception):
    """The database was written by a newer mimo-watchd (``version`` is what it says)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"its schema version {version} is newer than this mimo-watchd's "
                         f"({SCHEMA_VERSION}): upgrade this host")
        self.version = version


def migrate(cur: Any) -> int:
    """Creates the tables, or brings them up to ``SCHEMA_VERSION``, inside the caller's
    transaction (dict rows); returns the version found before (0: a new database)."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    cur.execute(_TABLES)
    cur.execute("SELECT value FROM mw_meta WHERE key = 'schema_version'")
    row = cur.fetchone()
    found = int(row["value"]) if row else 0
    if found > SCHEMA_VERSION:
        raise NewerSchemaError(found)
    cur.execute("INSERT INTO mw_meta VALUES ('schema_version', %s) ON CONFLICT (key) "
                "DO UPDATE SET value = EXCLUDED.value", (str(SCHEMA_VERSION),))
    return found
