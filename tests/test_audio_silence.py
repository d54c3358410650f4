"""What is sent of real files: speech kept whole over several noise floors, silence left out,
no clip for a hang-up, subtitle-sized clips, opened-file input, and streaming preparation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mimo_watchd.audio import AudioParams, Clip, prepare, probe
from mimo_watchd.emulator import tones

RATE = 16000
SPEECH = Path(__file__).parent / "data" / "speech.flac"
WORDS_A = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
WORDS_B = ["kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]


def line(kind: str, level_db: float, seconds: float, seed: int = 5) -> np.ndarray:
    """Float line noise at ``level_db`` dBFS RMS: white, pink (1/f) or a 50 Hz hum."""
    n = round(seconds * RATE)
    rng = np.random.default_rng(seed)
    if kind == "hum":
        t = np.arange(n) / RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3))
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        x = np.fft.irfft(spectrum, n)
    else:
        x = rng.standard_normal(n)
    return np.asarray(x * 10 ** (level_db / 20) / np.sqrt(np.mean(x * x)))


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float64) / 32768.0


def to_pcm(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def voicemail(talk: np.ndarray, noise: tuple[str, float], *, lead: float = 4.0,
              gap: float = 8.0, tail: float = 6.0, second: np.ndarray | None = None,
              ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Line noise with ``talk`` (and ``second``) in it: lead, talk, gap, second talk, tail.
    Returns the int16 samples and the (start, end) seconds of each talk."""
    second = talk if second is None else second
    parts = [np.zeros(round(lead * RATE)), as_float(talk), np.zeros(round(gap * RATE)),
             as_float(second), np.zeros(round(tail * RATE))]
    clean = np.concatenate(parts)
    a = lead
    b = a + len(talk) / RATE
    c = b + gap
    return to_pcm(clean + line(*noise, len(clean) / RATE)), [(a, b), (c, c + len(second) / RATE)]


def write(path: Path, pcm: np.ndarray, fmt: str = "flac") -> Path:
    tones.write_samples(path, pcm, RATE, fmt)
    return path


def heard(clips: list[Clip]) -> list[str]:
    """The tone words the emulator would hear in the clips, in order."""
    return [w for clip in clips for w in tones.recognize(tones.read(clip.data))]


def sent_mask(clips: list[Clip], seconds: float, step: float = 0.01) -> np.ndarray:
    """Which 10 ms steps of the source some clip sends."""
    mask = np.zeros(int(seconds / step) + 1, dtype=bool)
    for clip in clips:
        for a, b in clip.pieces:
            mask[int(np.ceil(a / step)) : int(b / step)] = True
    return mask


NOISES = [("white", -70.0), ("white", -50.0), ("pink", -45.0), ("hum", -40.0),
          ("white", -30.0)]


@pytest.mark.parametrize("noise", NOISES, ids=[f"{k}{db:g}" for k, db in NOISES])
def test_tone_words_over_a_line_are_all_sent_and_the_long_silence_is_not(
        tmp_path: Path, noise: tuple[str, float]) -> None:
    """Every word survives, in order; of the 8 s of line noise between the talks and the lead
    and tail only the 0.3 s margins are sent."""
    a = tones.synthesize(WORDS_A, lead_seconds=0.0)
    b = tones.synthesize(WORDS_B, lead_seconds=0.0)
    pcm, talks = voicemail(a, noise, second=b)
    prepared = prepare(write(tmp_path / "vm.flac", pcm), AudioParams())
    clips = list(prepared.iter_clips())
    assert heard(clips) == WORDS_A + WORDS_B
    talk_seconds = sum(e - s for s, e in talks)
    assert prepared.summary.sent_seconds == pytest.approx(talk_seconds + 4 * 0.3, abs=0.1)
    assert prepared.summary.no_speech is None
    mask = sent_mask(clips, prepared.summary.audio_seconds)
    assert not mask[int((talks[0][1] + 0.4) * 100) : int((talks[1][0] - 0.4) * 100)].any()


def test_quiet_tones_over_a_quiet_line_are_speech(tmp_path: Path) -> None:
    """Tone words at -29 dBFS over a -65 dBFS line are sent, the silence between is not."""
    a = tones.synthesize(WORDS_A, amplitude=0.05, lead_seconds=0.0)
    pcm, talks = voicemail(a, ("white", -65.0))
    prepared = prepare(write(tmp_path / "quiet.m4a", pcm, "m4a"), AudioParams())
    clips = list(prepared.iter_clips())
    assert heard(clips) == WORDS_A * 2
    assert prepared.summary.sent_seconds < sum(e - s for s, e in talks) + 1.5


@pytest.mark.parametrize("noise", NOISES, ids=[f"{k}{db:g}" for k, db in NOISES])
def test_a_hang_up_with_only_line_noise_has_no_clip(tmp_path: Path,
                                                    noise: tuple[str, float]) -> None:
    """30 s of line noise gives no clip, and the summary says why with the measured levels."""
    path = write(tmp_path / "hangup.flac", to_pcm(line(*noise, 30.0)))
    prepared = prepare(path, AudioParams())
    assert list(prepared.iter_clips()) == []
    summary = prepared.summary
    assert summary.clips == 0 and summary.sent_seconds == 0.0
    assert summary.audio_seconds == pytest.approx(30.0, abs=0.01)
    assert summary.no_speech is not None and "noise floor" in summary.no_speech
    assert noise[1] - 8 < summary.floor_db < noise[1]  # pink noise loses its sub-20 Hz part
    assert summary.floor_db < summary.peak_db < summary.floor_db + 10
    assert f"{summary.floor_db:.1f}" in summary.no_speech
    everything = list(prepare(path, AudioParams(skip_silence=False)).iter_clips())
    assert len(everything) == 1 and everything[0].sent_seconds == pytest.approx(30.0, abs=0.01)


def test_digital_silence_has_no_clip(tmp_path: Path) -> None:
    """A file of digital silence gives no clip: its floor and peak are -120 dBFS."""
    prepared = prepare(write(tmp_path / "zeros.wav", np.zeros(10 * RATE, np.int16), "wav"),
                       AudioParams())
    assert not prepared.passthrough and list(prepared.iter_clips()) == []
    assert prepared.summary.peak_db == -120.0


def speech(peak_db: float) -> np.ndarray:
    """The recorded sentences (espeak-ng, see tests/data/README.md) scaled to ``peak_db``."""
    pcm = tones.read(SPEECH.read_bytes())
    x = as_float(pcm)
    return to_pcm(x * 10 ** (peak_db / 20) / np.abs(x).max())


@pytest.mark.parametrize(("peak_db", "noise"), [
    (-3.0, ("white", -60.0)), (-3.0, ("pink", -40.0)), (-3.0, ("hum", -35.0)),
    (-25.0, ("white", -65.0)), (-15.0, ("white", -40.0)),
], ids=["loud-clean", "loud-pink", "loud-hum", "quiet-quiet-line", "low-snr"])
def test_real_speech_is_kept_whole_over_noise(tmp_path: Path, peak_db: float,
                                              noise: tuple[str, float]) -> None:
    """Every 10 ms of real speech (within 40 dB of its peak) is sent; the long silence
    between two messages is not."""
    talk = speech(peak_db)
    pcm, talks = voicemail(talk, noise, gap=10.0)
    prepared = prepare(write(tmp_path / "speech.flac", pcm), AudioParams())
    clips = list(prepared.iter_clips())
    mask = sent_mask(clips, prepared.summary.audio_seconds)
    frames = as_float(talk[: len(talk) // 160 * 160]).reshape(-1, 160)
    level = 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), 1e-12))
    loud = np.flatnonzero(level > level.max() - 40)
    for start, _ in talks:
        assert mask[round(start * 100) + loud].all()
    gap = mask[round((talks[0][1] + 0.5) * 100) : round((talks[1][0] - 0.5) * 100)]
    assert not gap.any()
    assert prepared.summary.sent_seconds < sum(e - s for s, e in talks) + 2.0


def test_subtitle_clips_end_at_every_left_out_silence(tmp_path: Path) -> None:
    """With subtitles each talk is its own clip (<= 15 s), cut where its silence begins."""
    a = tones.synthesize(WORDS_A, lead_seconds=0.0)
    pcm, talks = voicemail(a, ("white", -55.0), gap=3.0)
    path = write(tmp_path / "cues.flac", pcm)
    prepared = prepare(path, AudioParams(), subtitles=True)
    clips = list(prepared.iter_clips())
    assert [len(c.pieces) for c in clips] == [1, 1]
    for clip, (start, end) in zip(clips, talks, strict=True):
        assert clip.start == pytest.approx(start - 0.3, abs=0.02)
        assert clip.end == pytest.approx(end + 0.3, abs=0.02)
        assert clip.end - clip.start <= 15.0
    joined = list(prepare(path, AudioParams()).iter_clips())
    assert len(joined) == 1 and len(joined[0].pieces) == 2
    assert joined[0].source_time(joined[0].pieces[0][1] - joined[0].pieces[0][0] + 1.0) == (
        pytest.approx(joined[0].pieces[1][0] + 1.0))


def test_an_opened_file_is_read_through_its_descriptor_never_by_name(tmp_path: Path) -> None:
    """probe and prepare read an opened file even after its name points elsewhere (a symlink
    swapped in), leave the caller's descriptor open and its position alone, and name it as
    told in messages."""
    path = write(tmp_path / "msg.flac", voicemail(tones.synthesize(WORDS_A), ("white", -60.0))[0])
    other = write(tmp_path / "other.flac", tones.synthesize(WORDS_B))
    with path.open("rb") as f:
        f.seek(123)
        os.replace(path, tmp_path / "moved.flac")
        os.symlink(other, path)
        assert probe(f, name="inbox/msg.flac").name == "inbox/msg.flac"
        prepared = prepare(f.fileno(), AudioParams(), name="inbox/msg.flac")
        clips = list(prepared.iter_clips())
        assert heard(clips) == WORDS_A * 2
        assert f.tell() == 123 and f.read(4) != b""
        assert prepared.info.name == "inbox/msg.flac"
        by_name = list(prepare(tmp_path / "moved.flac", AudioParams()).iter_clips())
        assert [c.key for c in clips] == [c.key for c in by_name]


def tone_file(path: Path, minutes: float) -> Path:
    """A wav of tone words with pauses, ``minutes`` long."""
    words = [tones.WORDS[i % 36] for i in range(int(minutes * 60 / 0.5))]

    def blocks() -> Iterator[np.ndarray]:
        for i in range(0, len(words), 100):
            yield tones.synthesize(words[i : i + 100], lead_seconds=0.1)

    tones.write_samples(path, blocks(), RATE, "wav")
    return path


def test_clips_come_while_the_file_is_still_being_decoded(tmp_path: Path) -> None:
    """prepare decodes nothing of a long file, and the first clip is out before the decoder
    has read past ~63 s: cutting the file short after it shortens the clips that follow."""
    path = tone_file(tmp_path / "long.wav", 6.0)
    keep = 44 + 90 * RATE * 2  # the header and 90 s of samples
    prepared = prepare(path, AudioParams())
    clips = prepared.iter_clips()
    first = next(clips)
    assert first.end <= 60.0
    os.truncate(path, keep)
    rest = list(clips)
    assert rest and rest[-1].end <= 90.0 + 1e-6
    assert prepared.summary.audio_seconds == pytest.approx(90.0, abs=0.01)


def test_the_old_behaviour_stays_reachable_by_parameters(tmp_path: Path) -> None:
    """300 s clips at 16 kHz with nothing left out: a 320 s file with a 30 s silence gives two
    clips covering every second of it."""
    words = tones.synthesize(WORDS_A * 18, word_seconds=0.4, gap_seconds=0.6)  # ~144 s
    pcm = np.concatenate([words, np.zeros(30 * RATE, np.int16), words,
                          np.zeros(320 * RATE - 2 * len(words) - 30 * RATE, np.int16)])
    old = AudioParams(max_clip_seconds=300, skip_silence=False, max_sample_rate=16000)
    prepared = prepare(write(tmp_path / "old.flac", pcm), old)
    clips = list(prepared.iter_clips())
    assert prepared.rate == 16000 and len(clips) == 2
    assert clips[0].start == 0.0 and clips[1].end == pytest.approx(320.0)
    assert clips[0].end == clips[1].start and 150.0 <= clips[0].end <= 300.0
    assert prepared.summary.sent_seconds == pytest.approx(320.0)
    assert heard(clips) == WORDS_A * 36
