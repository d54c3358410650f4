"""A job's file as a boundary, in-process with real files and real symlinks: nothing outside
the watch is read or moved (issue 12 item 1), a recording replaced while its predecessor is in
flight never ends up beside the wrong transcript (item 9), and names another writer takes
meanwhile are never overwritten (item 10)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd.inputs import InputFile
from mimo_watchd.ledger import State
from mimo_watchd.transcription import TranscriptResult
from tests.test_jobs import FakeTranscriber, World, lines, logs, world

__all__ = ["logs", "world"]  # fixtures

PRIVATE = b"RIFF private recording nobody may read"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Meddling(FakeTranscriber):
    """Transcribes like the fake, after ``meddle()`` changed the inbox (as someone who can
    write into it would, while the job is in flight); records what it read."""

    def __init__(self, meddle: Any) -> None:
        super().__init__()
        self.meddle = meddle
        self.read: list[bytes] = []

    def transcribe(self, source: InputFile, **kw: Any) -> TranscriptResult:
        self.meddle()
        with open(source.reader, "rb") as fh:
            self.read.append(fh.read())
        return super().transcribe(source, **kw)


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A folder outside the watch holding a private recording ``b.wav`` and ``secret.wav``."""
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "b.wav").write_bytes(PRIVATE)
    (folder / "secret.wav").write_bytes(PRIVATE)
    return folder


def unchanged(private: Path) -> bool:
    return sorted(p.name for p in private.iterdir()) == ["b.wav", "secret.wav"] and all(
        p.read_bytes() == PRIVATE for p in private.iterdir())


def everything_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() or p.is_symlink()} if folder.exists() else {}


def test_a_folder_swapped_for_a_symlink_after_queueing_is_not_followed(
        world: World, private: Path, logs: list[dict[str, Any]]) -> None:
    """``sub/`` replaced by a symlink to a private folder after ``sub/b.wav`` was queued: the
    job reads nothing, sends nothing, moves nothing, and says why."""
    (world.inbox / "sub").mkdir()
    job = world.claim("sub/b.wav", b"RIFF the queued one")
    (world.inbox / "sub").rename(world.inbox / "elsewhere")
    (world.inbox / "sub").symlink_to(private)
    assert world.run(job).outcome == "vanished"
    assert world.transcriber.calls == [] and unchanged(private)
    assert everything_in(world.processed) == {} and everything_in(world.failed) == {}
    done = world.job(job.id)
    assert (done.state, done.outcome, done.final_path) == (State.FAILED, "vanished", None)
    assert "symlink" in (done.last_error or "")
    assert "symlink" in lines(logs, "job.vanished")[0]["reason"]


def test_a_file_swapped_for_a_symlink_after_queueing_is_not_followed(
        world: World, private: Path) -> None:
    """``a.wav`` replaced by a symlink to a private file: nothing read, moved or linked."""
    job = world.claim("a.wav")
    (world.inbox / "a.wav").unlink()
    (world.inbox / "a.wav").symlink_to(private / "secret.wav")
    assert world.run(job).outcome == "vanished"
    assert world.transcriber.calls == [] and unchanged(private)
    assert everything_in(world.processed) == {} and everything_in(world.failed) == {}
    assert (world.inbox / "a.wav").is_symlink()


def test_a_failing_job_never_moves_a_file_a_symlink_leads_to(
        world: World, private: Path) -> None:
    """A job failed (here: a crash loop) after its file became a symlink moves nothing into
    the failed folder and leaves the private file where it is."""
    job = world.claim("a.wav")
    for _ in range(2):
        world.ledger.recover(unclean=True)
        claimed = world.ledger.claim()
        assert claimed is not None
        job = claimed
    (world.inbox / "a.wav").unlink()
    (world.inbox / "a.wav").symlink_to(private / "secret.wav")
    assert world.run(job).outcome == "vanished"
    assert everything_in(world.failed) == {} and unchanged(private)


def test_a_folder_swapped_during_transcription_moves_only_the_transcribed_file(
        world: World, private: Path) -> None:
    """``sub/`` swapped for a symlink while ``sub/b.wav`` is transcribed: the job read the
    queued file through its descriptor and moves exactly that file; the private folder is
    neither read nor touched, and nothing of it is linked into processed."""
    (world.inbox / "sub").mkdir()
    queued = b"RIFF the queued one"

    def swap() -> None:
        (world.inbox / "sub").rename(world.inbox / "moved-away")
        (world.inbox / "sub").symlink_to(private)

    world.transcriber = Meddling(swap)
    job = world.claim("sub/b.wav", queued)
    assert world.run(job).outcome == "done"
    assert world.transcriber.read == [queued] and unchanged(private)
    assert (world.processed / "sub" / "b.wav").read_bytes() == queued
    assert world.sidecar("sub/b")["source"]["sha256"] == sha(queued)
    assert not (world.inbox / "moved-away" / "b.wav").exists()


def test_a_file_swapped_for_a_symlink_during_transcription_is_not_moved(
        world: World, private: Path) -> None:
    """``a.wav`` replaced by a symlink while it is transcribed: the transcribed audio (held
    open) goes to processed beside its transcript; the symlink and its target stay put."""
    queued = b"RIFF the queued one"

    def swap() -> None:
        (world.inbox / "a.wav").unlink()
        (world.inbox / "a.wav").symlink_to(private / "secret.wav")

    world.transcriber = Meddling(swap)
    job = world.claim("a.wav", queued)
    assert world.run(job).outcome == "done"
    assert (world.processed / "a.wav").read_bytes() == queued
    assert not (world.processed / "a.wav").is_symlink()
    assert (world.inbox / "a.wav").is_symlink() and unchanged(private)


def test_a_recording_renamed_over_in_flight_keeps_its_own_transcript(world: World) -> None:
    """A new ``a.wav`` renamed over the one being transcribed: the transcribed recording (held
    open) lands in processed beside its own transcript, the new one is left for its own job,
    which then takes the next name with its own transcript (issue 12 item 9)."""
    old, new = b"RIFF old recording", b"RIFF new recording, longer"

    def replace() -> None:
        (world.inbox / "a.tmp").write_bytes(new)
        (world.inbox / "a.tmp").rename(world.inbox / "a.wav")

    world.transcriber = Meddling(replace)
    first = world.claim("a.wav", old)
    assert world.run(first).outcome == "done"
    assert (world.processed / "a.wav").read_bytes() == old
    doc = world.sidecar("a")
    assert doc["source"]["sha256"] == sha(old)
    assert doc["source"]["path"] == str(world.processed / "a.wav")
    assert (world.inbox / "a.wav").read_bytes() == new  # left for its own job

    world.transcriber = FakeTranscriber()
    st = (world.inbox / "a.wav").stat()
    world.ledger.enqueue(watch=str(world.inbox), path=str(world.inbox / "a.wav"),
                         size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha(new),
                         arrived_at="t1")
    second = world.ledger.claim()
    assert second is not None and world.run(second).outcome == "done"
    assert (world.processed / "a-1.wav").read_bytes() == new
    assert world.sidecar("a-1")["source"]["sha256"] == sha(new)
    assert world.sidecar("a-1")["source"]["path"] == str(world.processed / "a-1.wav")


def test_a_recording_rewritten_in_place_in_flight_gets_no_sidecar(
        world: World, logs: list[dict[str, Any]]) -> None:
    """``a.wav`` rewritten in place while it is transcribed: the transcribed audio exists
    nowhere any more, so no sidecar names the new audio; the new content stays in the inbox
    for its own job, and the job says why (issue 12 item 9)."""
    old, new = b"RIFF old recording", b"RIFF rewritten, another length"

    def rewrite() -> None:
        with open(world.inbox / "a.wav", "r+b") as fh:
            fh.write(new)

    world.transcriber = Meddling(rewrite)
    job = world.claim("a.wav", old)
    assert world.run(job).outcome == "vanished"
    assert everything_in(world.processed) == {}
    assert (world.inbox / "a.wav").read_bytes() == new
    assert "rewritten" in lines(logs, "job.vanished")[0]["reason"]
    assert world.job(job.id).result is not None  # the paid transcript is kept in the ledger


def test_a_file_changed_after_queueing_is_left_for_its_own_job(world: World) -> None:
    """Content that differs from what was queued (same size, same mtime: only the hash
    tells) is not transcribed under the old job's hash; nothing is sent or moved."""
    job = world.claim("a.wav", b"RIFF first take")
    st = (world.inbox / "a.wav").stat()
    (world.inbox / "a.wav").write_bytes(b"RIFF other take")
    os.utime(world.inbox / "a.wav", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert world.run(job).outcome == "vanished"
    assert world.transcriber.calls == [] and everything_in(world.processed) == {}


def test_names_taken_after_the_plan_was_recorded_are_never_overwritten(world: World) -> None:
    """Another daemon sharing the processed folder writes ``a.wav``, ``a.txt`` and ``a.json``
    the moment this job has recorded its plan: none of them is overwritten, and this job's
    whole set moves to the next free name (issue 12 item 10)."""
    theirs = {"a.wav": b"their audio", "a.txt": b"their text\n", "a.json": b"{}"}
    record_plan = world.ledger.set_plan

    def racing_set_plan(job_id: int, plan: dict[str, Any], result: dict[str, Any]) -> None:
        record_plan(job_id, plan, result)
        world.processed.mkdir(exist_ok=True)
        for name, data in theirs.items():
            if not (world.processed / name).exists():
                (world.processed / name).write_bytes(data)

    world.ledger.set_plan = racing_set_plan  # type: ignore[method-assign]
    job = world.claim("a.wav", b"RIFF ours")
    assert world.run(job).outcome == "done"
    assert {n: (world.processed / n).read_bytes() for n in theirs} == theirs
    assert (world.processed / "a-1.wav").read_bytes() == b"RIFF ours"
    doc = json.loads((world.processed / "a-1.json").read_text())
    assert doc["source"]["path"] == str(world.processed / "a-1.wav")
    assert (world.processed / "a-1.txt").read_text() == "words of a.wav\n"
    assert world.job(job.id).final_path == str(world.processed / "a-1.wav")
    assert json.loads(json.dumps(world.job(job.id).plan))["stem"] == "a-1"
