"""Benchmark: clip encoding as mono wav vs mp3 (bitrates, LAME quality), at 24 or 16 kHz.

For a generated speech-like recording it prints, per variant: the chunk length the size and
duration limits allow, chunks needed, bytes per audio minute, base64 characters of the largest
chunk, encoding CPU time, and the signal-to-noise ratio of the decoded result (how much the
codec changes the waveform) and the log-mel spectral distance of speech frames (how much it
changes the log-mel energies an ASR front end sees; 0 = identical). The figures justify the
default ``clip_format: mp3`` at ``MP3_BITRATE``. Run from the repository root::

    python -m bench audio-formats            # 30 minutes of audio at 24 kHz
    python -m bench audio-formats --minutes 5 --rate 16000
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator

import av
import numpy as np

from mimo_watchd.audio.encode import ChunkEncoder, b64_chars, max_seconds_for

MAX_B64 = 9_500_000
MAX_CHUNK_SECONDS = 60.0  # AudioParams.max_clip_seconds
VARIANTS: list[tuple[str, int, int]] = [  # (format, mp3 bit rate, LAME quality)
    ("wav", 0, 0),
    ("mp3", 32_000, 5),
    ("mp3", 48_000, 5),
    ("mp3", 48_000, 7),
    ("mp3", 64_000, 5),
]


def speech_like(rate: int, seed: int = 1) -> Iterator[np.ndarray]:
    """An endless speech-like float signal: voiced syllables with harmonics, noise bursts for
    consonants, gaps between words, pauses between sentences, and a faint noise floor."""
    rng = np.random.default_rng(seed)
    while True:
        for _ in range(int(rng.integers(5, 16))):  # words of a sentence
            for _ in range(int(rng.integers(1, 4))):  # syllables of a word
                n = int(rng.uniform(0.12, 0.30) * rate)
                t = np.arange(n) / rate
                f0 = rng.uniform(90, 250)
                voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k
                             for k in range(1, 11))
                syllable = 0.12 * voiced * np.hanning(n)
                if rng.random() < 0.3:
                    syllable[: n // 4] += 0.05 * rng.standard_normal(n // 4)
                yield syllable + 0.002 * rng.standard_normal(n)
                yield 0.002 * rng.standard_normal(int(rng.uniform(0.0, 0.04) * rate))
            yield 0.002 * rng.standard_normal(int(rng.uniform(0.05, 0.15) * rate))
        yield 0.002 * rng.standard_normal(int(rng.uniform(0.4, 1.5) * rate))


def take(source: Iterator[np.ndarray], n: int, carry: list[np.ndarray]) -> np.ndarray:
    """Exactly ``n`` samples from ``source`` (``carry`` keeps what was left over)."""
    parts, have = list(carry), sum(len(p) for p in carry)
    carry.clear()
    while have < n:
        part = next(source)
        parts.append(part)
        have += len(part)
    whole: np.ndarray = np.concatenate(parts)
    carry.append(whole[n:])
    return whole[:n]


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples to 16-bit PCM."""
    pcm: np.ndarray = (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
    return pcm


def decoded(data: bytes) -> np.ndarray:
    """The int16 samples of an encoded chunk."""
    with av.open(io.BytesIO(data), "r") as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    pcm: np.ndarray = np.concatenate(frames)
    if pcm.dtype != np.int16:
        pcm = to_int16(pcm)
    return pcm


def mel_bank(rate: int, n_fft: int = 512, bands: int = 40) -> np.ndarray:
    """Triangular mel filters over the bins of an ``n_fft`` FFT (an ASR front end's view)."""
    mel = np.linspace(0, 2595 * np.log10(1 + rate / 2 / 700), bands + 2)
    edges = np.floor((n_fft + 1) * 700 * (10 ** (mel / 2595) - 1) / rate).astype(int)
    bank = np.zeros((bands, n_fft // 2 + 1))
    for i in range(bands):
        lo, mid, hi = edges[i], edges[i + 1], max(edges[i + 2], edges[i + 1] + 1)
        bank[i, lo:mid] = np.linspace(0, 1, mid - lo, endpoint=False)
        bank[i, mid:hi] = np.linspace(1, 0, hi - mid, endpoint=False)
    return bank


def log_mel(x: np.ndarray, rate: int) -> np.ndarray:
    """Log mel energies (dB) of ~32 ms frames with half-frame hops."""
    n = 512 if rate <= 16_000 else 768
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    energies: np.ndarray = 10 * np.log10(np.maximum(power @ mel_bank(rate, n).T, 1.0))
    return energies


def run_variant(fmt: str, bit_rate: int, quality: int, seconds: float,
                rate: int) -> dict[str, float]:
    """Encodes ``seconds`` of the signal in clips as the prepare step would; returns figures."""
    chunk_seconds = min(MAX_CHUNK_SECONDS,
                        max_seconds_for(fmt, MAX_B64, rate, bit_rate or 48_000))
    chunk_samples = int(chunk_seconds * rate)
    source, carry = speech_like(rate), list[np.ndarray]()
    remaining = int(seconds * rate)
    cpu = 0.0
    total_bytes = largest = chunks = 0
    signal_power = error_power = 0.0
    distances: list[np.ndarray] = []
    while remaining > 0:
        pcm = to_int16(take(source, min(chunk_samples, remaining), carry))
        remaining -= len(pcm)
        started = time.process_time()
        encoder = ChunkEncoder(fmt, rate, bit_rate=bit_rate or 48_000, quality=quality or 5)
        for i in range(0, len(pcm), 4096):  # blocks the size the decoder hands over
            encoder.write(pcm[i : i + 4096])
        data = encoder.finish()
        cpu += time.process_time() - started
        out = decoded(data)[: len(pcm)].astype(np.float64)
        ref = pcm[: len(out)].astype(np.float64)
        signal_power += float(np.sum(ref * ref))
        error_power += float(np.sum((out - ref) ** 2))
        a, b = log_mel(ref, rate), log_mel(out, rate)
        loud = a.max(axis=1) > a.max() - 30  # frames with speech in them, not the noise floor
        distances.append(np.sqrt(np.mean((a[loud] - b[loud]) ** 2, axis=1)))
        total_bytes += len(data)
        largest = max(largest, b64_chars(len(data)))
        chunks += 1
    return {
        "chunk_seconds": chunk_seconds, "chunks": chunks,
        "bytes_per_minute": total_bytes / (seconds / 60), "largest_b64": largest,
        "cpu": cpu, "realtime": seconds / cpu if cpu else float("inf"),
        "snr": 10 * np.log10(signal_power / error_power) if error_power else float("inf"),
        "lsd": float(np.mean(np.concatenate(distances))),
    }


def main() -> None:
    """Prints the table for BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, choices=(16_000, 24_000), default=24_000)
    args = parser.parse_args()
    seconds = args.minutes * 60
    print(f"{args.minutes:g} minutes of speech-like audio, {args.rate // 1000} kHz mono; "
          f"request limit {MAX_B64:,} base64 chars, clips <= {MAX_CHUNK_SECONDS:g} s; "
          f"PyAV {av.__version__}")
    header = ("format", "kbit/s", "LAME q", "clip s", "clips", "bytes/audio min",
              "largest clip b64", "encode CPU s", "x real time", "SNR dB", "log-mel dist dB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for fmt, bit_rate, quality in VARIANTS:
        r = run_variant(fmt, bit_rate, quality, seconds, args.rate)
        print(" | ".join([
            fmt, f"{16 * args.rate // 1000}" if fmt == "wav" else f"{bit_rate // 1000}",
            "-" if fmt == "wav" else str(quality), f"{r['chunk_seconds']:.1f}",
            f"{r['chunks']}", f"{r['bytes_per_minute']:,.0f}", f"{r['largest_b64']:,}",
            f"{r['cpu']:.2f}", f"{r['realtime']:.0f}", f"{r['snr']:.1f}", f"{r['lsd']:.2f}"]))


if __name__ == "__main__":
    main()
