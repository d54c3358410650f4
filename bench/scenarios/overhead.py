"""Overhead: how close the daemon gets to a bare client when the API costs nothing.

The emulator answers at once with no limits; N files of S seconds (16 kHz mono wav, unique tone
content) are dropped into an idle daemon at once. Target: daemon files/s >= 0.5 x the floor's.
Where a PostgreSQL server can be started (or ``MIMO_WATCHD_TEST_DSN`` names one), the daemon
runs once more with the fleet's ledger (``ledger.backend: postgres``): the claim path's cost
per file (claim, lease checks, fenced plan and finish, the shared rate limiter) next to SQLite's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.floor import write_bodies
from bench.harness import Deployment, EmulatorProc, link_tree, make_audio, scratch
from bench.report import Section, Table, fmt, ratio
from bench.scenarios.common import Run, run_daemon_batch, run_floor, run_naive_batch
from bench.scenarios.fleet import fleet_database
from tests import pgserver

NAME = "overhead"
TARGET = 0.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each file")
    p.add_argument("--concurrency", type=int, default=4, help="daemon and floor")


def run(args: argparse.Namespace) -> Section:
    n, conc = args.files, args.concurrency
    with scratch(args.scratch, NAME) as root:
        src = root / "source"
        for i in range(n):
            make_audio(src / f"f{i:05d}.wav", i, args.seconds)
        files = sorted(src.iterdir())
        write_bodies(files, root / "bodies")
        with EmulatorProc() as emu:
            floor = run_floor(emu, root / "bodies", conc, root / "floor.json")
        with EmulatorProc() as emu:
            dep = Deployment(root / "daemon")
            dep.write_config(emu.url, concurrency=conc)
            link_tree(src, root / "staged-daemon")
            daemon = run_daemon_batch(emu, dep, root / "staged-daemon", n)
        fleet = _postgres_batch(src, root, n, conc) if _can_postgres() else None
        with EmulatorProc() as emu:
            ndep = Deployment(root / "naive")
            link_tree(src, root / "staged-naive")
            naive = run_naive_batch(emu, ndep, root / "staged-naive", n, interval=1.0)
    d_rate, n_rate, f_rate = n / daemon.wall, n / naive.wall, n / floor["wall"]
    t = Table(["metric", "daemon", "naive", "floor", "daemon ÷ floor", "daemon ÷ naive"])
    t.add("files/s", d_rate, n_rate, f_rate, ratio(d_rate, f_rate), ratio(d_rate, n_rate))
    t.add("wall s", daemon.wall, naive.wall, floor["wall"], ratio(daemon.wall, floor["wall"]),
          ratio(daemon.wall, naive.wall))
    d_cpu, n_cpu, f_cpu = (1000 * daemon.cpu / n, 1000 * naive.cpu / n, 1000 * floor["cpu"] / n)
    t.add("client CPU ms/file", d_cpu, n_cpu, f_cpu, ratio(d_cpu, f_cpu), ratio(d_cpu, n_cpu))
    t.add("emulator CPU ms/file", 1000 * daemon.emulator_cpu / n, 1000 * naive.emulator_cpu / n,
          1000 * floor["emulator_cpu"] / n, "", "")
    t.add("peak RSS MB", daemon.peak_rss_mb, naive.peak_rss_mb, "-", "", "")
    t.add("done / failed", f"{daemon.done} / {daemon.failed}", f"{naive.done} / 0",
          f"{floor['ok']} / {floor['requests'] - floor['ok']}", "", "")
    if fleet is not None:
        p_rate = n / fleet.wall
        t.add("daemon with the PostgreSQL ledger: files/s", p_rate, "", "", ratio(p_rate, f_rate),
              "")
        t.add("PostgreSQL ÷ SQLite ledger: wall ms/file", 1000 * fleet.wall / n,
              1000 * daemon.wall / n, "", ratio(fleet.wall, daemon.wall), "")
        t.add("PostgreSQL ÷ SQLite ledger: client CPU ms/file", 1000 * fleet.cpu / n, d_cpu, "",
              ratio(1000 * fleet.cpu / n, d_cpu), "")
        t.add("PostgreSQL ledger: done / failed", f"{fleet.done} / {fleet.failed}", "", "", "",
              "")
    got = d_rate / f_rate
    ok = got >= TARGET and daemon.done == n
    verdict = (f"target daemon ÷ floor files/s >= {TARGET}: {fmt(got)} - "
               f"{'met' if ok else 'MISSED'}")
    setup = (f"{n} files of {args.seconds:g} s (16 kHz mono wav, unique content) dropped at once "
             f"(one rename each) into an idle client; emulator with no latency and no limits. "
             f"Daemon and floor: max_concurrency {conc}; naive: sequential, polling every 1 s. "
             "Wall time from the drop to the last file finished (daemon: ledger DONE+FAILED; "
             "naive: its .txt files); CPU from /proc/PID/stat over the same interval; the "
             "emulator's CPU is its own process's. The PostgreSQL rows: the same daemon with "
             "ledger.backend postgres on a throwaway local server (Unix socket), first column "
             "PostgreSQL, second SQLite; the server's own CPU is not counted."
             if fleet is not None else "emulator's CPU is its own process's (no PostgreSQL "
             "server here: the fleet ledger was not measured).")
    return Section(NAME, "Overhead (no latency, no limits)", setup, [t], [verdict], ok=ok)


def _can_postgres() -> bool:
    return bool(os.environ.get(pgserver.TEST_DSN_ENV)) or pgserver.binaries() is not None


def _postgres_batch(src: Path, root: Path, n: int, conc: int) -> Run:
    """The daemon's batch again, its ledger in PostgreSQL (one host)."""
    with fleet_database() as dsn, EmulatorProc() as emu:
        dep = Deployment(root / "postgres")
        dep.write_config(emu.url, concurrency=conc,
                         ledger={"backend": "postgres", "host_id": "bench"})
        link_tree(src, root / "staged-postgres")
        os.environ["MIMO_WATCHD_DSN"] = dsn
        try:
            return run_daemon_batch(emu, dep, root / "staged-postgres", n,
                                    done=lambda: _finished(dsn))
        finally:
            os.environ.pop("MIMO_WATCHD_DSN", None)


def _finished(dsn: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        query = "SELECT state, count(*) FROM mw_jobs GROUP BY state"
        rows: dict[str, int] = dict(db.execute(query).fetchall())
    return int(rows.get("DONE", 0)), int(rows.get("FAILED", 0))
