"""Long recordings: clips of <= 60 s cut in pauses (or with overlap), sent in parallel, joined
word for word, long silences never paid for, and resumed without paying twice."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings, default_audio_settings
from mimo_watchd.emulator import Emulator, EmulatorConfig, FaultRule, tones
from mimo_watchd.errors import PermanentApiError
from mimo_watchd.transcription import FileTranscriber
from tests.daemon_support import DaemonProcess
from tests.support import Deployment

COMMON = [w for w in tones.WORDS if w not in ("scarlet", "ivory")]


def word_sequence(count: int, seed: int) -> list[str]:
    """Random words where neighbours always differ (so gapless words stay separate)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        w = rng.choice(COMMON)
        if not out or out[-1] != w:
            out.append(w)
    return out


def write_long(path: Path, words: list[str], *, gapless: bool, word_seconds: float,
               gap_seconds: float = 0.2, fmt: str = "mp3") -> Path:
    """Writes a long tone recording block by block (bounded memory in the test too)."""
    block = 200

    def blocks() -> Iterator[np.ndarray]:
        for i in range(0, len(words), block):
            part = words[i:i + block]
            yield tones.synthesize(part, word_seconds=word_seconds, gap_seconds=gap_seconds,
                                   lead_seconds=0.0 if gapless else gap_seconds / 2,
                                   gapless=gapless)

    tones.write_samples(path, blocks(), 16000, fmt)
    return path


class DictJournal:
    """An in-memory journal (the daemon uses the SQLite ledger)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def lookup(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def record(self, key: str, raw: dict[str, Any]) -> None:
        self.entries[key] = raw


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    e = Emulator(EmulatorConfig(latency_scale=0.0, rpm=None, tpm=None))
    e.start()
    yield e
    e.stop()


def client_for(emu: Emulator, **api: Any) -> MimoClient:
    settings = default_api_settings(base_url=emu.url, requests_per_minute=100_000,
                                    tokens_per_minute=100_000_000, backoff_initial_seconds=0.01,
                                    backoff_max_seconds=0.05, **api)
    return MimoClient(settings, Secret("sk-long-test"))


def transcribe(emu: Emulator, path: Path, journal: DictJournal | None = None,
               **audio: Any) -> Any:
    client = client_for(emu, max_concurrency=4)
    try:
        return FileTranscriber(client, default_audio_settings(**audio), language="auto",
                               journal=journal).run(path)
    finally:
        client.close()


def as_words(text: str) -> list[str]:
    return [w.strip(".,") for w in text.split()]


def peaks_at(path: Path, times: list[float], around: float = 0.03) -> list[float]:
    """The loudest sample (of full scale) within ``around`` seconds of each of ``times``, read
    in one streaming decode of ``path``."""
    rate, pos = 16000, 0
    peaks = [0.0] * len(times)
    for block in tones.iter_decoded(path, sample_rate=rate):
        lo, hi = pos / rate, (pos + len(block)) / rate
        for i, t in enumerate(times):
            if t + around >= lo and t - around < hi:
                a = max(0, round((t - around) * rate) - pos)
                b = min(len(block), round((t + around) * rate) - pos)
                if a < b:
                    peaks[i] = max(peaks[i], float(np.abs(block[a:b]).max()) / 32768)
        pos += len(block)
    return peaks


@pytest.mark.slow
@pytest.mark.parametrize(("gapless", "fmt"), [(False, "mp3"), (True, "flac")])
def test_forty_minutes_exact_sequence(emu: Emulator, tmp_path: Path, gapless: bool,
                                      fmt: str) -> None:
    """40 minutes of tone words, with and without pauses: exactly the known words, in order,
    in clips of at most 60 s; with pauses each clip is cut in one (no overlap, silence at
    every cut), without any the clips overlap and the repeated words are removed."""
    word_seconds = 0.4 if gapless else 0.3
    per_word = word_seconds + (0 if gapless else 0.2)
    words = word_sequence(int(40 * 60 / per_word), seed=7 if gapless else 8)
    path = write_long(tmp_path / f"long.{fmt}", words, gapless=gapless,
                      word_seconds=word_seconds, fmt=fmt)
    before = len(emu.calls)
    result = transcribe(emu, path)
    assert result.info.duration_seconds > 39 * 60
    got = as_words(result.text)
    assert len(got) == len(words) and got == words
    assert len(result.chunks) >= 40 and len(emu.calls) - before == len(result.chunks)
    assert all(c.end - c.start <= 60.0 + 1e-6 for c in result.chunks)
    assert max(c.duration for c in emu.calls[before:]) <= 60.0 + 0.1
    assert result.usage["seconds"] == sum(c.usage["seconds"] for c in result.chunks)
    assert [w for s in result.segments for w in as_words(s.text)] == words
    cuts = [c.end for c in result.chunks[:-1]]
    if gapless:
        assert any(c.overlapped for c in result.chunks)
        return
    assert not any(c.overlapped for c in result.chunks)
    assert cuts == [c.start for c in result.chunks[1:]]
    # Tones are at half of full scale: at every cut there is silence (the mp3's noise only).
    assert max(peaks_at(path, cuts)) < 0.02


def short_file(path: Path) -> tuple[Path, list[str]]:
    """~60 s with a marker word that occurs once, in the middle chunk of three 20-s chunks."""
    words = word_sequence(120, seed=3)
    words[60] = "scarlet"
    write_long(path, words, gapless=False, word_seconds=0.3, fmt="wav")
    return path, words


AUDIO = {"max_clip_seconds": 20.0}


def test_chunk_500_twice_then_success(emu: Emulator, tmp_path: Path) -> None:
    """A chunk failing with 500 twice then succeeding still yields the complete transcript."""
    path, words = short_file(tmp_path / "s.wav")
    emu.add_fault(FaultRule("500", times=2, when_word="scarlet"))
    result = transcribe(emu, path, **AUDIO)
    assert as_words(result.text) == words
    assert sorted(c.attempts for c in result.chunks)[-1] == 3


def test_chunk_length_is_resplit(emu: Emulator, tmp_path: Path) -> None:
    """A chunk answered finish_reason=length is re-split smaller; nothing lost or repeated."""
    path, words = short_file(tmp_path / "s.wav")
    emu.add_fault(FaultRule("length", when_word="scarlet"))
    result = transcribe(emu, path, **AUDIO)
    assert as_words(result.text) == words
    assert len(result.chunks) >= 4


def test_retry_resends_only_failed_chunk(emu: Emulator, tmp_path: Path) -> None:
    """After a permanent failure of one chunk, a retry sends only that chunk again."""
    path, words = short_file(tmp_path / "s.wav")
    journal = DictJournal()
    emu.add_fault(FaultRule("400", when_word="scarlet"))
    with pytest.raises(PermanentApiError, match=r"clip \d"):
        transcribe(emu, path, journal=journal, **AUDIO)
    done = len(journal.entries)
    assert done >= 2
    before = len(emu.calls)
    result = transcribe(emu, path, journal=journal, **AUDIO)
    assert len(emu.calls) - before == 1
    assert as_words(result.text) == words
    assert sum(c.from_journal for c in result.chunks) == done


@pytest.mark.e2e
def test_crash_mid_file_resumes_without_resending(tmp_path: Path) -> None:
    """kill -9 after the first chunk's response is journaled: the restart sends only the rest."""
    emu = Emulator(EmulatorConfig(latency_scale=0.0, rpm=None, tpm=None))
    emu.start()
    try:
        layout = Deployment(tmp_path, test_timing=True)
        _, words = short_file(layout.inbox / "meeting.wav")
        layout.write_config(emu.url, api={"max_concurrency": 1}, audio=AUDIO)
        d = DaemonProcess(layout, once=True, env={"MIMO_WATCHD_CRASH_AT": "journaled"})
        assert d.wait(60) != 0
        assert len(emu.calls) == 1
        d2 = DaemonProcess(layout, once=True)
        assert d2.wait(60) == 0, d2.text()
        doc = layout.sidecar_docs()[0]
        assert as_words(doc["transcript"]) == words
        chunks = doc["chunks"]
        assert len(emu.calls) == len(chunks)
        assert Counter(c.audio_sha256 for c in emu.calls).most_common(1)[0][1] == 1
        assert sum(c["from_journal"] for c in chunks) == 1
    finally:
        emu.stop()
