"""A fleet for real: several ``mimo-watchd run`` processes, each with its own state folder, one
shared inbox (and processed and failed folders), one PostgreSQL, the emulator over HTTP."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess, run_cli
from tests.support import Deployment, wait_for

pytestmark = pytest.mark.e2e


def fleet_member(root: Path, shared: Path, name: str, emu: Emulator, *,
                 lease: float = 6.0, api: dict[str, float] | None = None) -> Deployment:
    """A daemon's deployment whose inbox, processed and failed folders are ``shared``'s."""
    dep = Deployment(root / name, test_timing=True)
    dep.inbox, dep.processed, dep.failed = (shared / "inbox", shared / "processed",
                                            shared / "failed")
    for folder in (dep.inbox, dep.processed, dep.failed):
        folder.mkdir(parents=True, exist_ok=True)
    dep.write_config(emu.url, api=api, ledger={"backend": "postgres", "host_id": name,
                                               "lease_seconds": lease})
    return dep


def drop(inbox: Path, staging: Path, count: int, start: int = 0) -> list[Path]:
    """Writes ``count`` distinct short recordings, then renames them into the inbox."""
    staging.mkdir(exist_ok=True)
    names = []
    for i in range(start, start + count):
        words = [tones.WORDS[i % len(tones.WORDS)], tones.WORDS[(i // len(tones.WORDS)) %
                                                                len(tones.WORDS)], "alpha"]
        src = staging / f"f{i:03d}.wav"
        tones.write(src, words, "wav")
        names.append(inbox / src.name)
        os.rename(src, names[-1])
    return names


def audio_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.wav"))


def test_three_daemons_sharing_an_inbox_pay_each_file_once(
        tmp_path: Path, emu: Emulator, pg_dsn: str) -> None:
    """Three daemons on one shared inbox and one PostgreSQL: every file is transcribed once,
    placed once, paid once, and no daemon records a failure for a file another moved."""
    shared = tmp_path / "share"
    members = [fleet_member(tmp_path, shared, f"host{i}", emu) for i in range(3)]
    env = {"MIMO_WATCHD_DSN": pg_dsn}
    daemons = [DaemonProcess(dep, env=env) for dep in members]
    try:
        for d in daemons:
            d.wait_ready()
        files = drop(shared / "inbox", tmp_path / "staging", 24)
        wait_for(lambda: len(audio_in(shared / "processed")) >= len(files) and not any(
            (shared / "inbox").iterdir()), 120, "every file processed")
        for d in daemons:
            d.wait_idle(60)
        status = run_cli(members[0], "status", "--json", "-c", str(members[0].config),
                         env=env)
    finally:
        for d in daemons:
            d.stop()
    assert [p.name for p in audio_in(shared / "processed")] == [p.name for p in files]
    assert len(list((shared / "processed").glob("*.json"))) == len(files)
    assert not any(shared.joinpath("failed").iterdir())
    paid = Counter(c.audio_sha256 for c in emu.calls if c.status == 200)
    assert len(paid) == len(files) and set(paid.values()) == {1}
    assert sum(len(d.saw("job.done")) for d in daemons) == len(files)
    assert not any(d.saw("job.vanished") or d.saw("job.failed") for d in daemons)
    doc = json.loads(status.stdout)
    assert doc["failed"] == 0 and doc["done"] == len(files), doc
    assert sorted(h["host_id"] for h in doc["fleet"]["hosts"]) == ["host0", "host1", "host2"]


def processing(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        return bool(db.execute("SELECT 1 FROM mw_jobs WHERE state = 'PROCESSING'").fetchall())


def test_a_frozen_daemons_file_is_taken_over_after_its_lease_and_placed_once(
        tmp_path: Path, emu: Emulator, pg_dsn: str) -> None:
    """A daemon frozen (SIGSTOP) while its request is in flight loses its file to another
    once its lease (extended over the request's deadline) has expired; woken up, it writes
    nothing for it: one set of outputs, no failure."""
    shared = tmp_path / "share"
    quick = {"connect_timeout_seconds": 1.0, "timeout_base_seconds": 2.0,
             "timeout_per_audio_second": 0.0}
    members = [fleet_member(tmp_path, shared, f"host{i}", emu, lease=5.0, api=quick)
               for i in range(2)]
    env = {"MIMO_WATCHD_DSN": pg_dsn}
    first = DaemonProcess(members[0], env=env)
    first.wait_ready()
    emu.add_fault(FaultRule("slow", delay=1.5))  # answered while the daemon is frozen
    drop(shared / "inbox", tmp_path / "staging", 1)
    wait_for(lambda: processing(pg_dsn), 30, "the first daemon to take the file",
             interval=0.01)
    time.sleep(0.3)  # its request is under way
    first.signal(signal.SIGSTOP)
    second = DaemonProcess(members[1], env=env)
    try:
        second.wait_ready()
        wait_for(lambda: audio_in(shared / "processed"), 60, "the takeover to place the file")
        first.signal(signal.SIGCONT)
        wait_for(lambda: first.saw("job.lease_lost"), 60, "the woken daemon to stop the job")
        first.wait_idle(60)
        second.wait_idle(60)
    finally:
        first.signal(signal.SIGCONT)
        first.stop()
        second.stop()
    assert not first.saw("job.done") and len(second.saw("job.done")) == 1
    assert sorted(p.name for p in (shared / "processed").iterdir()) == [
        "f000.json", "f000.txt", "f000.wav"]
    assert not any((shared / "failed").iterdir()) and not any((shared / "inbox").iterdir())
    # The answer that reached the frozen daemon may have been paid for as well: the
    # documented window of a freeze longer than the lease.
    assert 1 <= len([c for c in emu.calls if c.status == 200]) <= 2


def test_check_opens_the_fleet_ledger_and_never_shows_the_dsn(
        tmp_path: Path, emu: Emulator, pg_dsn: str) -> None:
    """``check`` with the postgres backend opens the database: fine with a good DSN; with a
    bad one, exit 78 and a reason that shows no part of the password."""
    dep = fleet_member(tmp_path, tmp_path / "share", "host0", emu)
    good = run_cli(dep, "check", "-c", str(dep.config), env={"MIMO_WATCHD_DSN": pg_dsn})
    assert good.returncode == 0, good.stderr
    bad_dsn = "host=/nonexistent-dir user=mw password=pw-never-shown-42 dbname=x"
    bad = run_cli(dep, "check", "-c", str(dep.config), env={"MIMO_WATCHD_DSN": bad_dsn})
    assert bad.returncode == 78 and "ledger:" in bad.stderr
    assert "pw-never-shown-42" not in bad.stderr + bad.stdout


def test_the_fleet_benchmark_runs(tmp_path: Path, pg_server: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny ``python -m bench fleet`` drives one daemon, a fleet of own ledgers and a fleet
    on PostgreSQL, prints the table with all three, and meets its targets."""
    from bench.__main__ import main

    code = main(["fleet", "--smoke", "--no-write", "--scratch", str(tmp_path)])
    out = capsys.readouterr().out
    assert "one PostgreSQL" in out and "own SQLite each" in out and "files paid twice" in out
    assert code == 0, out
    assert not any(tmp_path.iterdir()), "the scenario left scratch data behind"
