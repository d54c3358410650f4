"""The daemons of a fleet (``mw_hosts``): joining it, the heartbeat, and what ``status`` shows.

A daemon joins at start (``PostgresLedger.recover``), its keeper heartbeats at a third of the
lease, and it marks itself stopped at a clean stop. A host heard from within a lease is up.
``host_id`` names one daemon: a second live daemon with the same one (another state folder)
is refused, because a daemon's start releases the claims of its host's previous life.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg

from mimo_watchd.errors import LedgerError

Cursor = psycopg.Cursor[dict[str, Any]]


def register(cur: Cursor, host: str, owner: str, state_dir: Path, lease: float) -> None:
    """Joins the fleet as ``host``; LedgerError when a live daemon with another state folder
    already uses that name (the same state folder: a previous life of this daemon)."""
    cur.execute("SELECT owner, pid, state_dir, stopped, extract(epoch from clock_timestamp() "
                "- seen_at) AS age FROM mw_hosts WHERE host_id = %s FOR UPDATE", (host,))
    other = cur.fetchone()
    if (other is not None and not other["stopped"] and other["age"] < lease
            and other["state_dir"] != str(state_dir)):
        raise LedgerError(
            f"ledger.host_id {host!r} is in use by another daemon (pid {other['pid']}, "
            f"state_dir {other['state_dir']}, seen {other['age']:.0f} s ago): give each "
            "daemon of the fleet its own ledger.host_id")
    cur.execute("INSERT INTO mw_hosts VALUES (%s, %s, %s, %s, clock_timestamp(), "
                "clock_timestamp(), false) ON CONFLICT (host_id) DO UPDATE SET owner = "
                "EXCLUDED.owner, pid = EXCLUDED.pid, state_dir = EXCLUDED.state_dir, "
                "started_at = EXCLUDED.started_at, seen_at = EXCLUDED.seen_at, stopped = "
                "false", (host, owner, os.getpid(), str(state_dir)))


def heartbeat(db: psycopg.Connection[Any], host: str, owner: str) -> None:
    """This daemon is alive (the keeper's round)."""
    db.execute("UPDATE mw_hosts SET seen_at = clock_timestamp() WHERE host_id = %s AND "
               "owner = %s", (host, owner))


def stopped(cur: Cursor, host: str, owner: str) -> None:
    """This daemon stopped cleanly: down at once, not a lease later."""
    cur.execute("UPDATE mw_hosts SET stopped = true WHERE host_id = %s AND owner = %s",
                (host, owner))


def report(cur: Cursor, lease: float) -> dict[str, Any]:
    """Each host (up: heard from within a lease), the files it has in flight, the shared
    queue."""
    cur.execute("SELECT h.host_id, h.pid, h.stopped, extract(epoch from clock_timestamp() - "
                "h.seen_at) AS age, coalesce(array_agg(j.path ORDER BY j.id) FILTER (WHERE "
                "j.id IS NOT NULL), '{}') AS paths FROM mw_hosts h LEFT JOIN mw_jobs j ON "
                "j.state = 'PROCESSING' AND j.owner_host = h.host_id GROUP BY h.host_id "
                "ORDER BY h.host_id")
    hosts = cur.fetchall()
    cur.execute("SELECT count(*) FILTER (WHERE state = 'QUEUED') AS queued, count(*) FILTER "
                "(WHERE state = 'PROCESSING') AS in_progress FROM mw_jobs")
    queue = cur.fetchone()
    assert queue is not None
    return {"hosts": [{"host_id": h["host_id"], "pid": h["pid"],
                       "alive": not h["stopped"] and h["age"] < lease,
                       "seen_seconds_ago": round(float(h["age"]), 1),
                       "in_flight": [os.fsdecode(p) for p in h["paths"]]} for h in hosts],
            "queued": queue["queued"], "in_progress": queue["in_progress"]}
