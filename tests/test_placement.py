"""Placement on real files: the naming rule, names that fit, no overwrite under concurrent
jobs, a set that moves on when its names are taken, and the inbox name removed only while it
names the transcribed file (issue 12 items 1, 9, 10; issue 11 item 10)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd import fsutil, placement
from mimo_watchd.config import WatchSettings
from mimo_watchd.inputs import InputFile
from mimo_watchd.records import Failed, Transcribed

DOC: dict[str, Any] = {
    "schema": "mimo-watchd/transcript@1",
    "source": {"path": "", "original_path": "", "sha256": "", "bytes": 0, "format": "wav",
               "codec": "pcm_s16le", "duration_seconds": 1.0},
    "transcript": "", "no_speech": False, "language": "auto", "model": "mimo-v2.5-asr",
    "usage": {"seconds": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
              "audio_tokens": 1},
    "chunks": [], "timing": {"arrived_at": None, "started_at": "t", "finished_at": "t",
                             "api_seconds": 0.1},
    "tool": {"name": "mimo-watchd", "version": "0.1.0"}}


def record_of(source: InputFile, text: str) -> Transcribed:
    """The record of ``source`` transcribed as ``text``."""
    doc = json.loads(json.dumps(DOC))
    doc["source"].update(original_path=str(source.path), sha256=source.sha256(),
                         bytes=source.identity.size)
    doc["transcript"] = text
    return Transcribed.from_json(doc)


def watch_of(inbox: Path, processed: Path) -> WatchSettings:
    return WatchSettings(path=inbox, processed_dir=processed, failed_dir=inbox.parent / "failed")


def plan_for(watch: WatchSettings, source: InputFile, kind: str = "done") -> placement.Plan:
    return placement.choose(watch, source.path, kind, identity=source.identity,
                            sha256=source.sha256())


def test_the_naming_rule() -> None:
    """Own name and stem; the stem taken: the sidecars keep the extension; the name taken:
    the next number for the whole set. Without sidecars or an extension, numbers only."""
    first = list(zip(placement.candidates("call.wav", (".txt", ".json")), range(5),
                     strict=False))
    assert [c for c, _ in first] == [("call.wav", "call"), ("call.wav", "call.wav"),
                                     ("call-1.wav", "call-1"), ("call-1.wav", "call-1.wav"),
                                     ("call-2.wav", "call-2")]
    assert [c for c, _ in zip(placement.candidates("README", (".txt",)), range(2),
                              strict=False)] == [("README", "README"), ("README-1", "README-1")]
    assert [c for c, _ in zip(placement.candidates("call.wav", ()), range(2),
                              strict=False)] == [("call.wav", "call"), ("call-1.wav", "call-1")]


@pytest.mark.parametrize("name", ["n" * 251 + ".wav", "录" * 84 + ".wav",
                                  os.fsdecode(b"\xff" * 251 + b".wav")])
def test_every_candidate_fits_name_max(name: str) -> None:
    """Long names (ASCII, multi-byte, not UTF-8) give audio and sidecar names of at most 255
    bytes, cut at character boundaries."""
    for (audio, stem), _ in zip(placement.candidates(name, (".error.json",)), range(4),
                                strict=False):
        assert len(os.fsencode(audio)) <= 255
        assert len(os.fsencode(stem + ".error.json")) <= 255
        os.fsencode(stem).decode("utf-8", "surrogateescape")  # whole characters only


def test_jobs_racing_for_one_name_each_get_a_whole_set(tmp_path: Path) -> None:
    """12 threads place 12 recordings all named ``call.wav`` (from 12 watches) into one
    processed folder at once: 12 audio files, each with its own .txt and .json naming it,
    nothing overwritten."""
    processed = tmp_path / "processed"
    jobs = []
    for i in range(12):
        inbox = tmp_path / f"in{i}"
        inbox.mkdir()
        (inbox / "call.wav").write_bytes(f"RIFF recording {i}".encode())
        source = InputFile.open(inbox, inbox / "call.wav")
        jobs.append((watch_of(inbox, processed), source, f"text {i}"))
    start = threading.Barrier(len(jobs))
    results: list[placement.Placed] = []

    def place(watch: WatchSettings, source: InputFile, text: str) -> None:
        plan = plan_for(watch, source)
        start.wait()
        results.append(placement.carry_out(plan, record_of(source, text), source))

    threads = [threading.Thread(target=place, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, source, _ in jobs:
        source.close()
    assert len(results) == 12 and len({r.audio for r in results}) == 12
    texts = set()
    for js in processed.glob("*.json"):
        doc = json.loads(js.read_text())
        audio = Path(doc["source"]["path"])
        assert hashlib.sha256(audio.read_bytes()).hexdigest() == doc["source"]["sha256"]
        assert js.with_suffix(".txt").read_text() == doc["transcript"] + "\n"
        texts.add(doc["transcript"])
    assert texts == {f"text {i}" for i in range(12)}
    assert len(list(processed.glob("*.wav"))) == 12
    assert not any(p.name.startswith(".mimo-watchd-") for p in processed.iterdir())


def test_a_set_whose_stems_are_taken_moves_its_audio_to_the_next_number(
        tmp_path: Path) -> None:
    """The audio placed, then both sidecar stems found taken: the audio (here a copy: the
    inbox name was renamed over) moves to the next number with its sidecars; the move is
    recorded first, and a crash right after recording it is finished on resume."""
    inbox, processed = tmp_path / "in", tmp_path / "processed"
    inbox.mkdir()
    processed.mkdir()
    (inbox / "a.wav").write_bytes(b"RIFF ours")
    source = InputFile.open(inbox, inbox / "a.wav")
    plan = plan_for(watch_of(inbox, processed), source)
    (inbox / "new.wav").write_bytes(b"RIFF someone's new one")
    os.rename(inbox / "new.wav", inbox / "a.wav")
    for name in ("a.txt", "a.wav.txt"):
        (processed / name).write_text("theirs\n")

    class Killed(BaseException):
        """A kill -9, seen from inside."""

    recorded: list[placement.Plan] = []

    def record(step: placement.Plan, document: dict[str, Any]) -> None:
        recorded.append(step)
        if step.moved_from:
            raise Killed

    record_ = record_of(source, "ours")
    with pytest.raises(Killed):
        placement.carry_out(plan, record_, source, record_plan=record)
    source.close()
    moving = recorded[-1]
    assert (moving.audio_dest, moving.moved_from) == (str(processed / "a-1.wav"),
                                                      str(processed / "a.wav"))
    placed = placement.carry_out(moving, record_, None, resuming=True)
    assert placed.audio == processed / "a-1.wav" and placed.plan.stem == "a-1"
    assert (processed / "a-1.wav").read_bytes() == b"RIFF ours"
    assert not (processed / "a.wav").exists()
    assert json.loads((processed / "a-1.json").read_text())["source"]["path"] == str(
        processed / "a-1.wav")
    assert (processed / "a.txt").read_text() == (processed / "a.wav.txt").read_text() == \
        "theirs\n"
    assert (inbox / "a.wav").read_bytes() == b"RIFF someone's new one"


def test_a_resumed_plan_owns_what_it_wrote_and_nothing_else(tmp_path: Path) -> None:
    """Carried out again after a crash, a plan takes its own audio link and sidecars as
    done and finishes (the inbox name removed); a sidecar of other bytes under its stem is
    another job's, and the set moves on."""
    inbox, processed = tmp_path / "in", tmp_path / "processed"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(b"RIFF ours")
    with InputFile.open(inbox, inbox / "a.wav") as source:
        plan = plan_for(watch_of(inbox, processed), source)
        record = record_of(source, "ours")
        processed.mkdir()
        os.link(inbox / "a.wav", processed / "a.wav")  # linked before the crash
        fsutil.atomic_write(processed / "a.txt", "ours\n")  # and the first sidecar written
        placed = placement.carry_out(plan, record, source, resuming=True)
    assert placed.audio == processed / "a.wav" and set(placed.files) == {"txt", "json"}
    assert not (inbox / "a.wav").exists()

    (inbox / "b.wav").write_bytes(b"RIFF bee")
    with InputFile.open(inbox, inbox / "b.wav") as source:
        plan = plan_for(watch_of(inbox, processed), source)
        (processed / "b.txt").write_text("another job's words\n")
        placed = placement.carry_out(plan, record_of(source, "bee"), source, resuming=True)
    assert placed.plan.stem == "b.wav" and (processed / "b.txt").read_text() == \
        "another job's words\n"


def test_a_failed_file_goes_with_its_error_file_under_one_stem(tmp_path: Path) -> None:
    """The failed set (audio and NAME.error.json) follows the same rule: a taken error file
    stem makes it keep the extension."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(b"not audio")
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "a.error.json").write_text("{}")
    watch = watch_of(inbox, tmp_path / "processed")
    with InputFile.open(inbox, inbox / "a.wav") as source:
        plan = plan_for(watch, source, "failed")
        record = Failed(path="", original_path=str(source.path), sha256=None, reason="bad",
                        error="AudioError", http_status=None, api_error=None,
                        request_id=None, attempts=1, failed_at="t")
        placed = placement.carry_out(plan, record, source)
    assert placed.audio == failed / "a.wav" and placed.files == {
        "error_json": failed / "a.wav.error.json"}
    assert json.loads((failed / "a.wav.error.json").read_text())["source"]["path"] == str(
        failed / "a.wav")


def test_the_inbox_name_is_removed_only_while_it_names_the_file(tmp_path: Path) -> None:
    """``remove_name`` leaves a name that now holds another file; a file renamed over the
    name between the check and the removal is put back, not deleted."""
    (tmp_path / "a.wav").write_bytes(b"ours")
    ours = os.lstat(tmp_path / "a.wav")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "b.wav").write_bytes(b"theirs")
        os.rename(tmp_path / "b.wav", tmp_path / "a.wav")
        assert not fsutil.remove_name(fd, "a.wav", lambda st: st.st_ino == ours.st_ino)
        assert (tmp_path / "a.wav").read_bytes() == b"theirs"

        checks = iter([True, False])  # the check passes, then another file is there
        assert not fsutil.remove_name(fd, "a.wav", lambda st: next(checks))
        assert (tmp_path / "a.wav").read_bytes() == b"theirs"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    finally:
        os.close(fd)


def test_a_plan_recorded_by_the_previous_version_still_resumes(tmp_path: Path) -> None:
    """A plan without identity (written before this version) is carried out with the file
    as it is opened now."""
    inbox, processed = tmp_path / "in", tmp_path / "processed"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(b"RIFF old plan")
    old = {"kind": "done", "source": str(inbox / "a.wav"),
           "audio_dest": str(processed / "a-1.wav"), "sidecar_dir": str(processed),
           "stem": "a-1"}
    with InputFile.open(inbox, inbox / "a.wav") as source:
        plan = placement.Plan.from_dict(old)
        placed = placement.carry_out(plan, record_of(source, "x"), source, resuming=True)
    assert placed.audio == processed / "a-1.wav" and placed.plan.stem == "a-1"
    assert sorted(p.name for p in processed.iterdir()) == ["a-1.json", "a-1.txt", "a-1.wav"]


def test_a_file_we_may_not_link_is_renamed_not_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel refuses a hard link of the inbox file (protected_hardlinks: the file
    belongs to another user) the very inode is renamed into place without replacing anything,
    not copied."""
    inbox, processed = tmp_path / "in", tmp_path / "processed"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(b"RIFF someone else's")
    ino = os.lstat(inbox / "a.wav").st_ino

    def refused(dir_fd: int, name: str, dst: Path) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))

    monkeypatch.setattr(fsutil, "link_new", refused)
    with InputFile.open(inbox, inbox / "a.wav") as source:
        plan = plan_for(watch_of(inbox, processed), source)
        placed = placement.carry_out(plan, record_of(source, "x"), source)
    assert placed.audio == processed / "a.wav" and os.lstat(placed.audio).st_ino == ino
    assert not (inbox / "a.wav").exists() and set(placed.files) == {"txt", "json"}


def test_rename_new_never_replaces(tmp_path: Path) -> None:
    """The no-replace rename refuses an existing target, naming it, and leaves both files."""
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError) as info:
            fsutil.rename_new(fd, "a", tmp_path / "b")
        assert info.value.filename == str(tmp_path / "b")
        assert fsutil.rename_new(fd, "a", tmp_path / "c")
    finally:
        os.close(fd)
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "c").read_text() == "a"
