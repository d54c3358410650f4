"""Clips through the real daemon and a real emulator: silence never paid for, no request for a
file without speech, an upgraded config still starts, subtitles a watch or ``transcribe`` asks
for parse and follow the audio."""

from __future__ import annotations

import html
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt

from mimo_watchd.emulator import Emulator, tones
from tests.daemon_support import API_KEY, REPO, DaemonProcess
from tests.support import Deployment, wait_for
from tests.test_long import as_words, peaks_at, word_sequence
from tests.test_operations import _free_port, scrape

pytestmark = pytest.mark.e2e

RATE = 16000
WORD, GAP = 0.3, 0.2


def talk(words: list[str]) -> np.ndarray:
    """Tone words with 0.2 s pauses, no silence before the first or after the last."""
    return tones.synthesize(words, word_seconds=WORD, gap_seconds=GAP, lead_seconds=0.0)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def hiss(samples: np.ndarray, db: float, seed: int) -> np.ndarray:
    """``samples`` over white noise ``db`` dBFS (RMS): a phone line's floor."""
    noise = np.random.default_rng(seed).normal(0, 10 ** (db / 20) * 32767, len(samples))
    return np.clip(samples + noise, -32768, 32767).astype(np.int16)


def write(path: Path, samples: np.ndarray, fmt: str) -> Path:
    tones.write_samples(path, samples, RATE, fmt)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path, test_timing=True)


def test_no_speech_makes_no_call_and_an_old_config_starts(emu: Emulator,
                                                          layout: Deployment) -> None:
    """A silent file and a hang-up (line hiss, hum and a click) make no request: empty text,
    ``no_speech`` with the reason and levels, moved to processed; a message over the same line
    makes one. The config still names 0.1's audio options: the daemon starts and says what
    replaced them. Metrics count audio, sent seconds, clips and no-speech files."""
    n = 8 * RATE
    line = np.sin(2 * np.pi * 50 * np.arange(n) / RATE) * 10 ** (-45 / 20) * 32767
    click = np.zeros(n)
    click[3 * RATE: 3 * RATE + 40] = 12000.0  # 2.5 ms: a receiver put down
    write(layout.inbox / "silent.wav", silence(12), "wav")
    write(layout.inbox / "hangup.wav", hiss((line + click).astype(np.int16), -50, 1), "wav")
    words = word_sequence(12, seed=21)
    message = np.concatenate([silence(3), talk(words), silence(3)])
    write(layout.inbox / "message.mp3", hiss(message, -50, 2), "mp3")
    port = _free_port()
    layout.write_config(emu.url, metrics={"listen": f"127.0.0.1:{port}"},
                        audio={"max_chunk_seconds": 300.0, "chunk_format": "wav",
                               "silence_threshold_db": -40.0})
    d = DaemonProcess(layout)
    try:
        wait_for(lambda: layout.finished() == 3, 60, what="three files")
        metrics = wait_for(lambda: (m := scrape(f"http://127.0.0.1:{port}/metrics")).get(
            'mimo_watchd_files_total{outcome="done"}') == 3 and m, 10, what="metrics")
    finally:
        assert d.stop() == 0, d.text()
    assert [c.words for c in emu.calls] == [words]
    assert emu.calls[0].mime == "audio/wav"  # chunk_format, renamed clip_format, applied
    docs = {Path(doc["source"]["path"]).name: doc for doc in layout.sidecar_docs()}
    assert sorted(docs) == ["hangup.wav", "message.mp3", "silent.wav"]
    for name in ("silent", "hangup"):
        doc = docs[f"{name}.wav"]
        assert (layout.processed / f"{name}.txt").read_text() == ""
        assert doc["no_speech"] is True and doc["transcript"] == ""
        assert doc["no_speech_reason"].startswith("no speech: no 0.1 s of sound above")
        assert doc["chunks"] == [] and doc["segments"] == [] and doc["sent_seconds"] == 0
        assert doc["usage"]["seconds"] == 0 and doc["audio_seconds"] > 7
        assert doc["levels"]["peak_db"] <= doc["levels"]["silence_db"] + 30
    assert docs["silent.wav"]["levels"]["floor_db"] <= -100
    assert -65 < docs["hangup.wav"]["levels"]["floor_db"] < -40
    spoken = docs["message.mp3"]
    assert as_words(spoken["transcript"]) == words and spoken["no_speech"] is False
    assert spoken["sent_seconds"] < spoken["audio_seconds"] - 2  # the silences around it
    done = {Path(e["dest"]).name: e for e in d.saw("job.done")}
    assert (done["silent.wav"]["no_speech"], done["silent.wav"]["clips"],
            done["silent.wav"]["api_calls"]) == (True, 0, 0)
    assert done["message.mp3"]["clips"] == 1 and done["message.mp3"]["sent_seconds"] > 6
    retired = {e["detail"].split(":")[0] for e in d.saw("config.retired_option")}
    assert retired == {"audio.max_chunk_seconds", "audio.chunk_format",
                       "audio.silence_threshold_db"}
    assert metrics["mimo_watchd_no_speech_files_total"] == 2
    assert metrics["mimo_watchd_clips_total"] == 1
    assert metrics["mimo_watchd_sent_audio_seconds_total"] == pytest.approx(
        spoken["sent_seconds"], abs=0.01)
    assert metrics["mimo_watchd_audio_seconds_total"] == pytest.approx(
        sum(doc["audio_seconds"] for doc in docs.values()), abs=0.01)


def test_long_silences_are_not_paid_for(emu: Emulator, layout: Deployment) -> None:
    """10 minutes with 3 minutes of line noise at each end and in the middle, around two
    stretches of speech: billed for the speech (within 10 %, plus a second of rounding per
    clip), every word in order, each segment where its speech is."""
    first, second = word_sequence(60, seed=31), word_sequence(60, seed=32)
    parts = [silence(180), talk(first), silence(180), talk(second), silence(180)]
    starts = np.cumsum([0] + [len(p) for p in parts]) / RATE
    speech = [(starts[1], starts[2]), (starts[3], starts[4])]
    write(layout.inbox / "voicemail.mp3", hiss(np.concatenate(parts), -60, 3), "mp3")
    layout.write_config(emu.url)
    d = DaemonProcess(layout, once=True)
    assert d.wait(120) == 0, d.text()
    (doc,) = layout.sidecar_docs()
    assert as_words(doc["transcript"]) == first + second
    assert doc["audio_seconds"] == pytest.approx(600, abs=0.5)
    spoken = sum(b - a for a, b in speech)
    clips = len(doc["chunks"])
    billed = doc["usage"]["seconds"]
    assert billed == sum(c.usage["seconds"] for c in emu.calls) and len(emu.calls) == clips
    assert spoken <= doc["sent_seconds"] <= 1.1 * spoken
    assert billed <= 1.1 * spoken + clips, (billed, spoken, clips)
    for segment in doc["segments"]:
        assert any(a - 0.35 <= segment["start"] and segment["end"] <= b + 0.35
                   for a, b in speech), (segment, speech)
    assert [w for s in doc["segments"] for w in as_words(s["text"])] == first + second


def parse_subtitles(srt_text: str, vtt_text: str) -> list[tuple[float, float, str]]:
    """The cues of both files as (start, end, text), checked to be the same cues."""
    from_srt = [(s.start.total_seconds(), s.end.total_seconds(), s.content)
                for s in srt.parse(srt_text)]
    from_vtt = [(_seconds(c.start), _seconds(c.end), html.unescape(c.text))
                for c in webvtt.from_buffer(io.StringIO(vtt_text))]
    assert from_srt == from_vtt
    return from_srt


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def phrases(seed: int) -> tuple[np.ndarray, list[str]]:
    """~90 s: six phrases of 8-40 words, each followed by 2.5 s of silence."""
    rng = np.random.default_rng(seed)
    parts, words = [silence(0.5)], []
    for i in range(6):
        said = word_sequence(int(rng.integers(8, 41)), seed=seed * 10 + i)
        parts += [talk(said), silence(2.5)]
        words += said
    return np.concatenate(parts), words


def test_a_watch_writing_subtitles_gets_cues_at_real_cuts(emu: Emulator,
                                                          layout: Deployment) -> None:
    """formats [txt, json, srt, vtt]: clips of at most 15 s cut in pauses, SRT and VTT that
    parse to the same cues, in order within the recording, holding every word in order; each
    segment (so the first and last cue of a clip) starts and ends in silence."""
    samples, words = phrases(41)
    write(layout.inbox / "talk.flac", samples, "flac")
    layout.write_config(emu.url, watch={"formats": ["txt", "json", "srt", "vtt"]})
    d = DaemonProcess(layout, once=True)
    assert d.wait(60) == 0, d.text()
    (doc,) = layout.sidecar_docs()
    assert as_words(doc["transcript"]) == words
    assert all(c["end"] - c["start"] <= 15.0 + 1e-6 for c in doc["chunks"])
    assert len(doc["chunks"]) >= 8
    cue_list = parse_subtitles((layout.processed / "talk.srt").read_text(),
                               (layout.processed / "talk.vtt").read_text())
    times = [t for start, end, _ in cue_list for t in (start, end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= doc["audio_seconds"]
    assert [w for _, _, text in cue_list for w in as_words(text)] == words
    edges = sorted({t for s in doc["segments"] for t in (s["start"], s["end"])})
    processed = layout.processed / "talk.flac"
    assert max(peaks_at(processed, edges, around=0.02)) < 0.02


def test_transcribe_writes_the_formats_asked_for(emu: Emulator, tmp_path: Path) -> None:
    """``transcribe --format srt,vtt`` writes only NAME.srt and NAME.vtt, which parse; an
    unknown format is a usage error naming it."""
    samples, words = phrases(42)
    path = write(tmp_path / "talk.wav", samples, "wav")
    env = {**os.environ, "MIMO_API_KEY": API_KEY, "MIMO_BASE_URL": emu.url,
           "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "mimo_watchd", "transcribe", str(path), "--format"]
    r = subprocess.run([*run, "srt,vtt"], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt", "talk.vtt", "talk.wav"]
    cue_list = parse_subtitles((tmp_path / "talk.srt").read_text(),
                               (tmp_path / "talk.vtt").read_text())
    assert [w for _, _, text in cue_list for w in as_words(text)] == words
    bad = subprocess.run([*run, "srt,docx"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert bad.returncode == 2 and re.search(r"unknown format docx", bad.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt", "talk.vtt", "talk.wav"]
