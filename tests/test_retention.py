"""Retention (issue 16 item 3) on real files and a real ledger: what is old is judged from the
set's newest file, only finished jobs' own files go, and nothing outside the output folders or
through a symlink is ever deleted."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mimo_watchd import retention
from mimo_watchd.config import RetentionSettings, WatchSettings
from mimo_watchd.errors import AudioError
from tests.test_jobs import World, world  # noqa: F401 (fixture)

DAY = 86400.0


def aged(*paths: Path, days: float) -> None:
    """Gives files an mtime ``days`` in the past."""
    t = time.time() - days * DAY
    for p in paths:
        os.utime(p, (t, t), follow_symlinks=False)


def keeping(w: World, **options: Any) -> WatchSettings:
    return replace(w.watch, retention=RetentionSettings(**options))


def test_old_audio_goes_and_its_sidecars_stay(world: World) -> None:  # noqa: F811
    """processed_days 30: a set 31 days old loses its audio (keep: sidecars); a set 29 days old
    stays whole; with keep [] the sidecars go too."""
    for name in ("old.wav", "young.wav"):
        world.run(world.claim(name, name.encode()))
    p = world.processed
    aged(p / "old.wav", p / "old.txt", p / "old.json", days=31)
    aged(p / "young.wav", p / "young.txt", p / "young.json", days=29)
    results = retention.prune([keeping(world, processed_days=30)], world.ledger)
    assert [(r.file.path.name, r.deleted) for r in results] == [("old.wav", True)]
    assert sorted(x.name for x in p.iterdir()) == ["old.json", "old.txt", "young.json",
                                                   "young.txt", "young.wav"]
    results = retention.prune([keeping(world, processed_days=30, keep=())], world.ledger)
    assert sorted(r.file.path.name for r in results if r.deleted) == ["old.json", "old.txt"]


def test_an_old_recording_processed_today_is_kept(world: World) -> None:  # noqa: F811
    """A recording whose own date is years old keeps it when moved; its sidecars, written
    today, make the set young, so it is not deleted the day it is transcribed."""
    path = world.arrive("archive.wav", b"old tape")
    aged(path, days=3000)
    st = path.stat()
    world.ledger.enqueue(watch=str(world.inbox), path=str(path), size=st.st_size,
                         mtime_ns=st.st_mtime_ns, sha256=_sha(b"old tape"), arrived_at="t")
    job = world.ledger.claim()
    assert job is not None and world.run(job).outcome == "done"
    assert (world.processed / "archive.wav").stat().st_mtime < time.time() - 2999 * DAY
    assert retention.expired([keeping(world, processed_days=1)], world.ledger) == []


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_failed_files_follow_failed_days(world: World) -> None:  # noqa: F811
    """A failed file and its error file are judged by failed_days; processed_days alone
    leaves them."""
    world.transcriber.errors.append(AudioError("not audio"))
    world.run(world.claim("bad.wav"))
    f = world.failed
    aged(f / "bad.wav", f / "bad.error.json", days=10)
    assert retention.expired([keeping(world, processed_days=1)], world.ledger) == []
    results = retention.prune([keeping(world, failed_days=7, keep=())], world.ledger)
    assert sorted(r.file.path.name for r in results if r.deleted) == ["bad.error.json",
                                                                      "bad.wav"]


def test_files_the_ledger_does_not_hold_as_finished_are_never_touched(
        world: World) -> None:  # noqa: F811
    """An old file put in the processed folder by hand, and the audio of a job in progress
    (its plan recorded), stay whatever their age."""
    world.processed.mkdir(parents=True, exist_ok=True)
    stray = world.processed / "by-hand.wav"
    stray.write_bytes(b"x")
    aged(stray, days=400)
    job = world.claim("busy.wav")
    world.ledger.set_plan(job.id, {"kind": "done", "audio_dest": str(stray),
                                   "sidecar_dir": str(world.processed), "stem": "by-hand"}, {})
    assert retention.expired([keeping(world, processed_days=0)], world.ledger) == []
    assert stray.exists()


def test_a_folder_swapped_for_a_symlink_is_not_followed(world: World,  # noqa: F811
                                                        tmp_path: Path) -> None:
    """When a sub-folder of the processed folder is replaced by a symlink to elsewhere after
    it was judged, nothing there is deleted; a file replaced by another is kept too."""
    (world.inbox / "sub").mkdir()
    world.arrive("sub/a.wav", b"a")
    world.arrive("sub/b.wav", b"b")
    for name in ("a.wav", "b.wav"):
        path = world.inbox / "sub" / name
        st = path.stat()
        world.ledger.enqueue(watch=str(world.inbox), path=str(path), size=st.st_size,
                             mtime_ns=st.st_mtime_ns, sha256=_sha(path.read_bytes()),
                             arrived_at="t")
        job = world.ledger.claim()
        assert job is not None and world.run(job).outcome == "done"
    sub = world.processed / "sub"
    aged(*sub.iterdir(), days=5)
    items = retention.expired([keeping(world, processed_days=1)], world.ledger)
    assert sorted(i.path.name for i in items) == ["a.wav", "b.wav"]
    outside = tmp_path / "outside"
    sub.rename(outside)
    sub.symlink_to(outside)
    results = [retention.delete(i) for i in items]
    assert not any(r.deleted for r in results)
    assert all("cannot be opened safely" in (r.error or "") for r in results)
    assert sorted(x.name for x in outside.iterdir()) == ["a.json", "a.txt", "a.wav", "b.json",
                                                         "b.txt", "b.wav"]
    sub.unlink()
    outside.rename(sub)
    (sub / "a.wav").unlink()
    (sub / "a.wav").write_bytes(b"a")  # same name and size, another file
    assert [(r.file.path.name, r.deleted) for r in map(retention.delete, items)] == [
        ("a.wav", False), ("b.wav", True)]


def test_a_dry_run_deletes_nothing(world: World) -> None:  # noqa: F811
    """dry_run lists what would go and leaves it."""
    world.run(world.claim("a.wav"))
    aged(*world.processed.iterdir(), days=3)
    results = retention.prune([keeping(world, processed_days=2)], world.ledger, dry_run=True)
    assert [(r.file.path.name, r.deleted) for r in results] == [("a.wav", False)]
    assert (world.processed / "a.wav").exists()


def test_without_a_period_nothing_goes(world: World) -> None:  # noqa: F811
    """A retention section without processed_days keeps processed files for ever."""
    world.run(world.claim("a.wav"))
    aged(*world.processed.iterdir(), days=10_000)
    assert retention.expired([keeping(world, failed_days=1)], world.ledger) == []
