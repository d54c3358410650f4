"""The ledger when its file is damaged, lost, full or read by another command, and when the
wall clock steps: refused, noticed, held, untouched, never waiting longer than meant."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimo_watchd.errors import LedgerFullError, LedgerLostError
from mimo_watchd.ledger import SqliteLedger, State, open_ledger, read_ledger


def _with_jobs(state: Path, n: int = 300) -> Path:
    """A ledger holding ``n`` jobs (with long paths, so it spans many pages), closed."""
    ledger = SqliteLedger(state)
    for i in range(n):
        ledger.enqueue(watch="/in", path=f"/in/{'x' * 200}-{i}.wav", size=i, mtime_ns=i,
                       sha256=f"{i:064x}", arrived_at="t")
    ledger.close()
    return state / "ledger.sqlite3"


def test_an_empty_ledger_file_is_refused_not_made_afresh(tmp_path: Path) -> None:
    """A 0-byte ledger is refused with one message naming the file and what to do; it stays as
    it was (a new, empty ledger would pay again for everything done)."""
    (tmp_path / "ledger.sqlite3").write_bytes(b"")
    for opener in (lambda: open_ledger(tmp_path), lambda: read_ledger(tmp_path)):
        with pytest.raises(LedgerLostError) as info:
            opener()
        assert str(tmp_path / "ledger.sqlite3") in str(info.value)
        assert "Recovering the ledger" in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "ledger.sqlite3").stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.sqlite3"]


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_corrupt_ledger_is_refused(tmp_path: Path, damage: str) -> None:
    """Random bytes, or a ledger cut in half, are refused as corrupt when opened for the daemon
    (every page read) and left as they are."""
    path = _with_jobs(tmp_path)
    if damage == "random":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
    before = path.read_bytes()
    with pytest.raises(LedgerLostError, match="is corrupt"):
        open_ledger(tmp_path, thorough=True)
    assert path.read_bytes() == before


def test_a_new_ledger_appears_whole(tmp_path: Path) -> None:
    """A ledger made where there was none is a complete database from its first byte on disk
    (no empty file is ever seen under its name), and no temporary file is left."""
    open_ledger(tmp_path / "state").close()
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["ledger.sqlite3"]
    db = sqlite3.connect(f"file:{tmp_path / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("3",)
    db.close()


def test_reading_writes_nothing(tmp_path: Path) -> None:
    """The read-only ledger of the read commands creates no folder, no ledger and no WAL or
    index file, and sees what a daemon wrote (also through a WAL while one is open)."""
    assert read_ledger(tmp_path / "state") is None
    assert not (tmp_path / "state").exists()
    _with_jobs(tmp_path / "state", n=3)
    reader = read_ledger(tmp_path / "state")
    assert reader is not None and reader.counts()["QUEUED"] == 3
    reader.close()
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["ledger.sqlite3"]
    writer = open_ledger(tmp_path / "state")
    writer.enqueue(watch="/in", path="/in/new.wav", size=1, mtime_ns=1, sha256="n",
                   arrived_at="t")
    reader = read_ledger(tmp_path / "state")
    assert reader is not None and reader.counts()["QUEUED"] == 4
    reader.close()
    writer.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_ledger_deleted_or_replaced_in_use_is_noticed(tmp_path: Path, how: str) -> None:
    """``verify`` raises LedgerLostError once the file opened is gone or another one has taken
    its name; before that it passes."""
    ledger = open_ledger(tmp_path)
    try:
        ledger.verify()
        path = tmp_path / "ledger.sqlite3"
        if how == "deleted":
            path.unlink()
        else:
            shutil.copy(path, tmp_path / "copy")
            os.replace(tmp_path / "copy", path)
        with pytest.raises(LedgerLostError, match=how):
            ledger.verify()
    finally:
        ledger.close()


def test_a_wall_clock_stepped_back_never_stretches_a_wait(tmp_path: Path) -> None:
    """A job requeued for 5 s stays waiting while the clock runs on normally, but is due at
    once when the clock stepped an hour back (the wait left would exceed the 5 s meant)."""
    ledger = SqliteLedger(tmp_path)
    try:
        job = ledger.enqueue(watch="/in", path="/in/a.wav", size=1, mtime_ns=1, sha256="a",
                             arrived_at="t")
        assert ledger.claim() is not None
        ledger.requeue(job.id, delay=5.0, error="HTTP 503")
        now = time.time()
        assert ledger.claim(now + 1) is None
        assert 3.5 < (ledger.next_due_in(now + 1) or 0) <= 4.0
        assert ledger.next_due_in(now - 3600) == 0.0
        claimed = ledger.claim(now - 3600)
        assert claimed is not None and claimed.id == job.id
    finally:
        ledger.close()


def test_failed_files_count_files_not_jobs(tmp_path: Path) -> None:
    """A file that failed, was moved back by retry and failed again counts once; a vanished
    one and a retried one that then succeeded not at all; the newest failure comes first."""
    ledger = SqliteLedger(tmp_path)
    try:
        def fail(path: str, outcome: str = "failed") -> int:
            job = ledger.enqueue(watch="/in", path=path, size=1, mtime_ns=time.time_ns(),
                                 sha256=path, arrived_at="t")
            ledger.claim_job(job.id)
            ledger.finish(job.id, State.FAILED, final_path=path.replace("in", "failed"),
                          outcome=outcome, error="no")
            return job.id

        first = fail("/in/a.wav")
        ledger.finish(first, State.FAILED, final_path="/in/a.wav", outcome="retried")
        fail("/in/a.wav")
        second = fail("/in/b.wav")
        ledger.finish(second, State.FAILED, final_path="/in/b.wav", outcome="retried")
        fail("/in/c.wav", outcome="vanished")
        assert ledger.counts()["FAILED"] == 4
        assert ledger.failed_files() == 1
        assert [j.path for j in ledger.recent_failures()] == ["/in/a.wav"]
    finally:
        ledger.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (mounting needs root; skipped where it is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                    "run as root to test a full state folder")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path) -> Path:
    """Writes a file into ``folder`` until its file system has no space left; returns it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_state_folder_is_a_ledger_full_error_until_space_returns(small_fs: Path) -> None:
    """With no space left a write raises LedgerFullError naming the folder; nothing is half
    written, and once space is freed the same ledger writes again."""
    ledger = SqliteLedger(small_fs)
    try:
        job = ledger.enqueue(watch="/in", path="/in/a.wav", size=1, mtime_ns=1, sha256="a",
                             arrived_at="t")
        filler = fill(small_fs)
        with pytest.raises(LedgerFullError, match=f"state folder {small_fs} is full"):
            for i in range(50):
                ledger.record_response(sha256="a", variant="v", span=str(i), job_id=job.id,
                                       raw={"text": "y" * 8000})
        filler.unlink()
        ledger.record_response(sha256="a", variant="v", span="after", job_id=job.id,
                               raw={"text": "ok"})
        assert ledger.lookup_response(sha256="a", variant="v", span="after") == {"text": "ok"}
    finally:
        ledger.close()
