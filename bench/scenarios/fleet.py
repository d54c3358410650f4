"""Fleet: several daemons on one shared inbox and one account, with and without a shared ledger.

One emulator enforcing 100 requests/minute and 10K tokens/minute with its latency model; N
short files (unique content) renamed at once into one inbox that every daemon watches (their
processed and failed folders shared too, as on a NAS); each daemon with a state folder of its
own and the account's budget (requests_per_minute 100, tokens_per_minute 10000). Side by side:
one daemon (SQLite), D daemons each with its own SQLite ledger (what issue 15 measured), and D
daemons sharing one PostgreSQL ledger (``ledger.backend: postgres``). Targets for the shared
ledger: no file paid twice, no duplicate sidecars, no false failures, no 429s, and a sustained
rate within 0.97 of one daemon's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    DaemonProc,
    Deployment,
    EmulatorProc,
    count_files,
    drop_all,
    link_tree,
    make_audio,
    scratch,
    wait_for,
)
from bench.report import Section, Table, fmt, ratio
from bench.scenarios.saturation import sustained_rpm

NAME = "fleet"
RPM, TPM = 100, 10_000
TARGET = 0.97


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each file")
    p.add_argument("--daemons", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=3, help="max_concurrency of each daemon")


@contextlib.contextmanager
def fleet_database() -> Iterator[str]:
    """A DSN of an empty schema: on ``MIMO_WATCHD_TEST_DSN`` or a throwaway server."""
    from tests import pgserver

    given = os.environ.get(pgserver.TEST_DSN_ENV)
    if given:
        yield pgserver.isolated_dsn(given)
        return
    bin_dir = pgserver.binaries()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server binaries (apt install postgresql) and no "
                           f"{pgserver.TEST_DSN_ENV}")
    server = pgserver.PgServer(bin_dir)
    try:
        yield pgserver.isolated_dsn(server.dsn)
    finally:
        server.stop()


@dataclass(frozen=True)
class FleetRun:
    """What one fleet (or one daemon) did with the batch, from the emulator and the folders."""

    label: str
    wall: float
    paid: int
    paid_twice: int
    rejected: int
    duplicate_sidecars: int
    false_failures: int
    rpm: float
    done: int


def _members(root: Path, share: Path, emu: EmulatorProc, count: int, conc: int,
             ledger: dict[str, Any] | None) -> list[Deployment]:
    members = []
    for i in range(count):
        dep = Deployment(root / f"host{i}")
        dep.inbox, dep.processed, dep.failed = (share / "inbox", share / "processed",
                                                share / "failed")
        for folder in (dep.inbox, dep.processed, dep.failed):
            folder.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = (
            {} if ledger is None else {"ledger": {**ledger, "host_id": f"host{i}"}})
        dep.write_config(emu.url, rpm=RPM, tpm=TPM, concurrency=conc, **extra)
        members.append(dep)
    return members


def _active(members: list[Deployment], dsn: str | None) -> int:
    """Jobs queued or in progress, in the shared ledger or in every daemon's own."""
    if dsn is not None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as db:
            row = db.execute("SELECT count(*) FROM mw_jobs WHERE state IN "
                             "('QUEUED', 'PROCESSING')").fetchone()
        return int(row[0]) if row else 0
    return sum(c.get("QUEUED", 0) + c.get("PROCESSING", 0)
               for c in (m.ledger_counts() for m in members))


def _failed_jobs(members: list[Deployment], dsn: str | None) -> int:
    if dsn is not None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as db:
            row = db.execute("SELECT count(*) FROM mw_jobs WHERE state = 'FAILED'").fetchone()
        return int(row[0]) if row else 0
    return sum(m.ledger_counts().get("FAILED", 0) for m in members)


def run_fleet(label: str, root: Path, src: Path, n: int, count: int, conc: int,
              dsn: str | None) -> FleetRun:
    """Starts ``count`` daemons idle on one share, drops the batch, waits until all is done."""
    share = root / "share"
    ledger = None if dsn is None else {"backend": "postgres", "lease_seconds": 60.0}
    with EmulatorProc(latency_scale=1.0, rpm=RPM, tpm=TPM) as emu:
        members = _members(root, share, emu, count, conc, ledger)
        staged = root / "staged"
        link_tree(src, staged)
        if dsn is not None:
            os.environ["MIMO_WATCHD_DSN"] = dsn  # the children's environment
        daemons = [DaemonProc(m) for m in members]
        try:
            for d in daemons:
                d.wait_ready()
            started = time.monotonic()
            drop_all(staged, share / "inbox")
            wait_for(lambda: not any((share / "inbox").iterdir())
                     and count_files(share / "processed", ".json")
                     + count_files(share / "failed", ".error.json") >= n
                     and _active(members, dsn) == 0, 1800, f"{n} files through {label}",
                     interval=0.2)
            wall = time.monotonic() - started
        finally:
            for d in daemons:
                d.stop()
            os.environ.pop("MIMO_WATCHD_DSN", None)
        calls = emu.calls()
    ok = [c for c in calls if c["status"] == 200]
    per_content = Counter(c.get("audio_sha256") for c in ok)
    sidecars = Counter(json.loads(p.read_text())["source"]["sha256"]
                       for p in (share / "processed").glob("*.json"))
    failed_here = count_files(share / "failed", ".error.json")
    return FleetRun(label=label, wall=wall, paid=len(ok),
                    paid_twice=sum(1 for k in per_content.values() if k > 1),
                    rejected=sum(1 for c in calls if c["status"] == 429),
                    duplicate_sidecars=sum(1 for k in sidecars.values() if k > 1),
                    false_failures=_failed_jobs(members, dsn) + failed_here,
                    rpm=sustained_rpm(calls), done=len(sidecars))


def run(args: argparse.Namespace) -> Section:
    n, d, conc = args.files, args.daemons, args.concurrency
    with scratch(args.scratch, NAME) as root:
        src = root / "source"
        for i in range(n):
            make_audio(src / f"f{i:05d}.wav", i, args.seconds)
        one = run_fleet("1 daemon, SQLite", root / "one", src, n, 1, conc, None)
        own = run_fleet(f"{d} daemons, own SQLite each", root / "own", src, n, d, conc, None)
        with fleet_database() as dsn:
            shared = run_fleet(f"{d} daemons, one PostgreSQL", root / "pg", src, n, d, conc,
                               dsn)
    runs = [one, own, shared]
    t = Table(["metric", *(r.label for r in runs)])
    t.add("paid calls", *(r.paid for r in runs))
    t.add("files paid twice or more", *(r.paid_twice for r in runs))
    t.add("HTTP 429 answers", *(r.rejected for r in runs))
    t.add("files with duplicate sidecars", *(r.duplicate_sidecars for r in runs))
    t.add("false failures (failed jobs + error files)", *(r.false_failures for r in runs))
    t.add("files transcribed", *(r.done for r in runs))
    t.add("sustained requests/min", *(r.rpm for r in runs))
    t.add("wall s (all files)", *(r.wall for r in runs))
    t.add("PostgreSQL fleet ÷ one daemon (requests/min)", "", "", ratio(shared.rpm, one.rpm))
    clean = (shared.paid_twice == 0 and shared.duplicate_sidecars == 0
             and shared.false_failures == 0 and shared.rejected == 0 and shared.done == n)
    ok = clean and shared.rpm >= TARGET * one.rpm
    verdict = (f"target for {d} daemons on one PostgreSQL: 0 paid twice, 0 duplicate "
               f"sidecars, 0 false failures, 0 429s, sustained rate >= {TARGET} x one "
               f"daemon's: {shared.paid_twice} / {shared.duplicate_sidecars} / "
               f"{shared.false_failures} / {shared.rejected}, {fmt(shared.rpm / one.rpm)} x - "
               f"{'met' if ok else 'MISSED'}")
    setup = (f"{n} files of {args.seconds:g} s (16 kHz mono wav, unique content) renamed at once "
             f"into one inbox watched by every daemon (processed and failed folders shared "
             f"too); one emulator enforcing {RPM} requests/min and {TPM:,} tokens/min with its "
             f"latency model; each daemon with its own state folder, requests_per_minute {RPM}, "
             f"tokens_per_minute {TPM}, max_concurrency {conc}, other options at their "
             "defaults; the PostgreSQL fleet with lease_seconds 60 on a throwaway local "
             "server (Unix socket). Paid twice: contents answered 200 more than once. Sustained "
             "rate: answered requests in the whole minutes after the first one, per minute.")
    return Section(NAME, f"Fleet ({d} daemons, one inbox, one account)", setup, [t],
                   [verdict], ok=ok)
