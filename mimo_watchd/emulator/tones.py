"""The test vocabulary: tone "words" that tests synthesise and the emulator recognises.

Each word is a pure tone of its own frequency (400 Hz .. 2935 Hz, 65 Hz apart: inside the
telephone band, so AMR-NB at 8 kHz and 16 kbit/s Opus keep every word apart). A transcript made
of recognised words lets a test check order, loss and duplication across chunk boundaries from
the audio *content* alone.

Recognition is frame-wise: 20 ms windows every 10 ms, an energy gate (-34 dBFS, so synthesise
with ``amplitude`` >= 0.05), then the dominant FFT peak. A frame is a word only when the peak
holds most of the frame's energy (it is a tone) and lies within 25 Hz of that word's frequency.
Runs of one word form the word; runs shorter than ``MIN_FRAGMENT_SECONDS`` are dropped, so a
sliver cut off at a chunk edge vanishes: in practice fragments of <= 0.11 s are dropped and
fragments of >= 0.13 s (half a default word is 0.15 s) are reported, through every codec. Two
equal words need a gap of >= 50 ms between them, or they merge into one.

Non-tonal audio (noise, speech, music, chords) is deliberately recognised as *nothing* rather
than as nearest words: deterministic either way, and a test never sees invented words.
``Recognizer.loud_seconds`` still tells such audio from silence (the emulator answers it with a
placeholder saying what it heard, and silence with nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimo_watchd.emulator.audiofile import FORMATS, encode, iter_decoded, read, write_samples

__all__ = [
    "FORMATS",
    "FREQUENCIES",
    "MIN_FRAGMENT_SECONDS",
    "WORDS",
    "Recognizer",
    "duration",
    "encode",
    "iter_decoded",
    "read",
    "recognize",
    "synthesize",
    "to_bytes",
    "write",
    "write_samples",
]

WORDS: tuple[str, ...] = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "zero", "one", "two", "three", "four", "five",
    "six", "seven", "eight", "nine", "amber", "cobalt", "ivory", "scarlet",
)  # fmt: skip
BASE_HZ = 400.0
STEP_HZ = 65.0
FREQUENCIES: dict[str, float] = {w: BASE_HZ + STEP_HZ * i for i, w in enumerate(WORDS)}

FRAME_SECONDS = 0.02
HOP_SECONDS = 0.01
MIN_FRAGMENT_SECONDS = 0.12  # 60 % of the shortest word worth writing (0.2 s)
TOLERANCE_HZ = 25.0  # < STEP_HZ / 2: a dead zone between neighbours; 16 kbit/s Opus jitters ~15 Hz
GATE_RMS = 0.02  # of full scale (-34 dBFS): quieter frames are silence
TONALITY = 0.6  # share of a frame's energy that must sit in the peak's main lobe
GLITCH_FRAMES = 3  # word runs this short are codec noise; gaps this short are dropouts
FADE_SECONDS = 0.005  # ramps at tone edges keep clicks (broadband energy) out of codecs


def synthesize(
    words: Sequence[str],
    *,
    word_seconds: float = 0.3,
    gap_seconds: float = 0.2,
    lead_seconds: float = 0.1,
    sample_rate: int = 16000,
    amplitude: float = 0.5,
    gapless: bool = False,
) -> np.ndarray:
    """Render ``words`` as mono int16 tones: lead silence, words separated by gaps, tail silence.

    ``gapless`` puts the words back to back (phase-continuous, no silence between them); adjacent
    words must then differ, or they would be one long word.
    """
    unknown = [w for w in words if w not in FREQUENCIES]
    if unknown:
        raise ValueError(f"not in the tone vocabulary: {unknown}")
    if gapless and any(a == b for a, b in itertools.pairwise(words)):
        raise ValueError("gapless words must differ from their neighbours")
    n_word = round(word_seconds * sample_rate)
    n_gap = 0 if gapless else round(gap_seconds * sample_rate)
    n_lead = round(lead_seconds * sample_rate)
    segments: list[tuple[int, float]] = [(n_lead, 0.0)]
    for i, word in enumerate(words):
        if i and n_gap:
            segments.append((n_gap, 0.0))
        segments.append((n_word, FREQUENCIES[word]))
    segments.append((n_lead, 0.0))
    freq = np.concatenate([np.full(n, hz) for n, hz in segments])
    voiced = freq > 0
    # Accumulated phase keeps gapless word changes free of discontinuities.
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    signal = np.sin(phase) * _envelope(voiced, round(FADE_SECONDS * sample_rate))
    samples: np.ndarray = np.round(signal * amplitude * 32767).astype(np.int16)
    return samples


def _envelope(voiced: np.ndarray, ramp: int) -> np.ndarray:
    """0/1 gate of the voiced samples with raised-cosine ramps at every on/off edge."""
    env = voiced.astype(np.float64)
    if ramp < 2 or not env.any():
        return env
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    shape = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    for edge in edges:
        if voiced[edge + 1]:  # silence -> tone
            start = edge + 1
            env[start : start + ramp] *= shape[: len(env[start : start + ramp])]
        else:  # tone -> silence
            stop = edge + 1
            seg = env[max(0, stop - ramp) : stop]
            seg *= shape[::-1][-len(seg) :]
    return env


def duration(words: Sequence[str], **synth_kw: Any) -> float:
    """Length in seconds of what ``synthesize(words, **synth_kw)`` returns."""
    rate: int = synth_kw.get("sample_rate", 16000)
    return len(synthesize(words, **synth_kw)) / rate


def write(path: str | Path, words: Sequence[str], fmt: str = "wav", **synth_kw: Any) -> Path:
    """Synthesise ``words`` and encode them as a real ``fmt`` file (see ``FORMATS``)."""
    rate = synth_kw.get("sample_rate", 16000)
    write_samples(path, synthesize(words, **synth_kw), rate, fmt)
    return Path(path)


def to_bytes(words: Sequence[str], fmt: str = "wav", **synth_kw: Any) -> bytes:
    """Synthesise ``words`` and return the bytes of a ``fmt`` file (e.g. for a request body)."""
    return encode(synthesize(words, **synth_kw), synth_kw.get("sample_rate", 16000), fmt)


class Recognizer:
    """Incremental recognition: ``feed`` int16 blocks of any size, then ``finish`` for the words.

    Memory stays bounded by one frame of samples plus one small label per 10 ms.
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self._frame = round(FRAME_SECONDS * sample_rate)
        self._hop = round(HOP_SECONDS * sample_rate)
        self._nfft = 1 << (4 * self._frame - 1).bit_length()  # zero-pad: finer peak position
        self._window = np.hanning(self._frame)
        self._pending = np.zeros(0, dtype=np.float64)
        self._labels: list[int] = []  # word index per frame, -1 for none
        self._loud_frames = 0
        self.samples = 0

    def feed(self, block: np.ndarray) -> None:
        """Add the next samples (int16) of the signal."""
        self.samples += len(block)
        # Slices of ~10 s bound the float copies and FFT matrices whatever the block size.
        step = 10 * self.sample_rate
        for start in range(0, len(block), step):
            piece = np.asarray(block[start : start + step], dtype=np.float64) / 32768.0
            data = np.concatenate([self._pending, piece])
            if len(data) < self._frame:
                self._pending = data
                continue
            frames = np.lib.stride_tricks.sliding_window_view(data, self._frame)[:: self._hop]
            self._labels.extend(self._label(frames))
            self._pending = data[len(frames) * self._hop :]

    def _label(self, frames: np.ndarray) -> list[int]:
        """Word index (or -1) for each row of ``frames``."""
        labels = np.full(len(frames), -1, dtype=np.int64)
        loud = np.sqrt(np.mean(frames**2, axis=1)) >= GATE_RMS
        self._loud_frames += int(loud.sum())
        if not loud.any():
            return labels.tolist()
        power = np.abs(np.fft.rfft(frames[loud] * self._window, self._nfft, axis=1)) ** 2
        power[:, 0] = 0.0
        peak = np.argmax(power[:, 1:-1], axis=1) + 1
        rows = np.arange(len(peak))
        lobe = int(np.ceil(2 * self._nfft / self._frame))  # Hann main lobe half-width in bins
        cum = np.concatenate([np.zeros((len(peak), 1)), np.cumsum(power, axis=1)], axis=1)
        lo = np.clip(peak - lobe, 0, power.shape[1])
        hi = np.clip(peak + lobe + 1, 0, power.shape[1])
        share = (cum[rows, hi] - cum[rows, lo]) / np.maximum(cum[:, -1], 1e-20)
        # Parabolic interpolation on log power: sub-bin accuracy for a pure tone.
        a, b, c = (np.log(power[rows, peak + d] + 1e-20) for d in (-1, 0, 1))
        denom = a - 2 * b + c
        offset = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
        hz = (peak + offset) * self.sample_rate / self._nfft
        index = np.rint((hz - BASE_HZ) / STEP_HZ).astype(np.int64)
        near = np.abs(hz - (BASE_HZ + STEP_HZ * index)) <= TOLERANCE_HZ
        ok = (share >= TONALITY) & near & (index >= 0) & (index < len(WORDS))
        labels[np.flatnonzero(loud)] = np.where(ok, index, -1)
        return labels.tolist()

    @property
    def loud_seconds(self) -> float:
        """How much of the signal so far is above the energy gate (words or not)."""
        return self._loud_frames * HOP_SECONDS

    def finish(self) -> list[str]:
        """The recognised words, in order."""
        runs = _runs(self._labels)
        runs = [(lab if lab < 0 or n > GLITCH_FRAMES else -1, n) for lab, n in runs]
        runs = _bridge_dropouts(_runs_merge(runs))
        min_frames = MIN_FRAGMENT_SECONDS / HOP_SECONDS
        # A run of n frames covers about (n - 1) hops of tone (the windows overlap its edges).
        return [WORDS[lab] for lab, n in runs if lab >= 0 and n - 1 >= min_frames - 1e-9]


def _runs(labels: Iterable[int]) -> list[tuple[int, int]]:
    """Run-length encoding: (label, count) pairs."""
    out: list[tuple[int, int]] = []
    for lab in labels:
        if out and out[-1][0] == lab:
            out[-1] = (lab, out[-1][1] + 1)
        else:
            out.append((lab, 1))
    return out


def _runs_merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join neighbouring runs that carry the same label."""
    out: list[tuple[int, int]] = []
    for lab, n in runs:
        if out and out[-1][0] == lab:
            out[-1] = (lab, out[-1][1] + n)
        else:
            out.append((lab, n))
    return out


def _bridge_dropouts(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join two runs of one word split by a few unlabelled frames (a codec dropout)."""
    out: list[tuple[int, int]] = []
    for lab, n in runs:
        if (
            lab >= 0
            and len(out) >= 2
            and out[-1][0] < 0
            and out[-1][1] <= GLITCH_FRAMES
            and out[-2][0] == lab
        ):
            gap = out.pop()[1]
            out[-1] = (lab, out[-1][1] + gap + n)
        else:
            out.append((lab, n))
    return out


def recognize(samples: np.ndarray, sample_rate: int = 16000) -> list[str]:
    """The tone words in mono int16 ``samples``, in order (empty for silence or non-tonal audio)."""
    rec = Recognizer(sample_rate)
    rec.feed(samples)
    return rec.finish()
