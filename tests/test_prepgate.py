"""The CPU's share: at most ``slots`` clips prepared at once across every file, in arrival
order, and a shutting-down job never waits behind others' decoding."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd import transcription
from mimo_watchd.audio import PreparedAudio
from mimo_watchd.config import default_api_settings, default_audio_settings
from mimo_watchd.emulator import tones
from mimo_watchd.prepgate import PrepareGate, usable_cpus
from mimo_watchd.protocol import Transcript
from mimo_watchd.transcription import FileTranscriber
from tests.support import wait_for


class Holder:
    """A thread that takes a slot and keeps it until ``leave`` is set."""

    def __init__(self, gate: PrepareGate, name: str, entered: list[str],
                 stopping: threading.Event | None = None) -> None:
        self.leave = threading.Event()
        self.inside = threading.Event()
        self.name = name

        def hold() -> None:
            with gate.slot(stopping.is_set if stopping else lambda: False):
                entered.append(name)
                self.inside.set()
                self.leave.wait(10)

        self.thread = threading.Thread(target=hold, daemon=True)
        self.thread.start()


def test_default_slots_are_the_usable_cpus() -> None:
    assert PrepareGate().slots == usable_cpus() >= 1


def test_at_most_slots_at_once_then_first_come_first_served() -> None:
    gate, entered = PrepareGate(2), list[str]()
    a, b = Holder(gate, "a", entered), Holder(gate, "b", entered)
    wait_for(lambda: gate.busy == 2, 5, "two slots taken")
    queued = []
    for name in "cde":  # queued one after another: their order is known
        queued.append(Holder(gate, name, entered))
        count = len(queued)
        wait_for(lambda: gate.waiting == count, 5, f"{name} waiting")  # noqa: B023 - now
    assert gate.busy == 2 and sorted(entered) == ["a", "b"]
    a.leave.set()
    wait_for(lambda: entered[-1:] == ["c"], 5, "c let in")
    assert gate.busy == 2 and gate.waiting == 2
    b.leave.set()
    queued[0].leave.set()
    wait_for(lambda: len(entered) == 5, 5, "d and e let in")
    assert entered[2:] == ["c", "d", "e"]
    for h in queued:
        h.leave.set()
        h.thread.join(5)
    assert gate.busy == 0 and gate.waiting == 0


def test_a_stopping_waiter_goes_through_without_a_slot() -> None:
    gate, entered, stop = PrepareGate(1), list[str](), threading.Event()
    holder = Holder(gate, "busy", entered)
    holder.inside.wait(5)
    stopping = Holder(gate, "stopping", entered, stop)
    wait_for(lambda: gate.waiting == 1, 5, "the second waiting")
    stop.set()
    assert stopping.inside.wait(5)
    assert gate.busy == 1  # it took no slot: the holder's is the only one
    holder.leave.set()
    stopping.leave.set()


def test_each_produces_every_item_holding_a_slot() -> None:
    gate = PrepareGate(1)
    seen = []

    def items() -> Iterator[int]:
        for i in range(3):
            seen.append(gate.busy)
            yield i

    assert list(gate.each(items())) == [0, 1, 2]
    assert seen == [1, 1, 1] and gate.busy == 0


class Answering:
    """A client that answers every clip at once."""

    def __init__(self) -> None:
        self.api = default_api_settings(max_concurrency=4)
        self.stopping = False

    def transcribe(self, data: bytes, mime: str, duration: float, **_: Any) -> Transcript:
        return Transcript(text="alpha.", finish_reason="stop", request_id="r", usage={},
                          attempts=1, api_seconds=0.0, raw={})


def test_files_transcribed_together_decode_one_clip_at_a_time_through_a_shared_gate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two files in two threads, one gate of one slot: no two clips are ever decoded at once
    (each file's decode steps are counted while they run), and both files are complete."""
    real_iter = PreparedAudio.iter_clips
    lock, running, most = threading.Lock(), [0], [0]

    def counted(self: PreparedAudio) -> Iterator[Any]:
        inner = real_iter(self)
        while True:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            try:
                clip = next(inner)
            except StopIteration:
                return
            finally:
                with lock:
                    running[0] -= 1
            yield clip

    monkeypatch.setattr(PreparedAudio, "iter_clips", counted)
    audio = default_audio_settings(max_clip_seconds=5.0, skip_silence=False)
    gate = PrepareGate(1)
    paths = [tones.write(tmp_path / f"f{i}.flac", list(tones.WORDS[:30]), "flac")
             for i in range(2)]
    results: list[transcription.TranscriptResult] = []

    def run(path: Path) -> None:
        results.append(FileTranscriber(Answering(), audio, language="auto",  # type: ignore[arg-type]
                                       gate=gate).run(path))

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and all(len(r.chunks) >= 2 for r in results)
    assert most[0] == 1
