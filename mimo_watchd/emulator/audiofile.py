"""Encoding and decoding of real audio files with PyAV, for the emulator and its test vocabulary.

Both directions stream in blocks, so an hour of audio never has to sit in memory at once.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

BLOCK_SAMPLES = 16000  # encoder input block; any size works, this keeps frames small


@dataclass(frozen=True)
class _Format:
    """How one file format is written: container, codec, fixed sample rate and bit rate."""

    container: str
    codec: str
    rate: int | None = None  # None: keep the caller's sample rate
    bit_rate: int | None = None


# Bit rates are deliberately low (what phones and call recorders produce), so the recognition
# tests prove the tone vocabulary survives lossy speech-grade encoding.
FORMATS: dict[str, _Format] = {
    "wav": _Format("wav", "pcm_s16le"),
    "aiff": _Format("aiff", "pcm_s16be"),
    "flac": _Format("flac", "flac"),
    "mp3": _Format("mp3", "libmp3lame", bit_rate=32_000),
    "m4a": _Format("ipod", "aac", bit_rate=32_000),
    # ffmpeg's native vorbis encoder is "experimental"; Ogg here means Ogg Opus.
    "ogg": _Format("ogg", "libopus", rate=16000, bit_rate=16_000),
    "opus": _Format("opus", "libopus", rate=16000, bit_rate=16_000),
    "webm": _Format("webm", "libopus", rate=16000, bit_rate=16_000),
    "amr": _Format("amr", "libopencore_amrnb", rate=8000, bit_rate=12_200),
}


def write_samples(
    path: str | Path | BinaryIO,
    samples: np.ndarray | Iterable[np.ndarray],
    sample_rate: int,
    fmt: str = "wav",
) -> None:
    """Encode mono int16 samples (one array, or an iterable of blocks) into a real ``fmt`` file
    (a path or a seekable binary file object)."""
    try:
        spec = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(sorted(FORMATS))}") from None
    target: Any = path if isinstance(path, io.IOBase) else str(path)
    blocks: Iterable[np.ndarray] = (
        _split_blocks(samples) if isinstance(samples, np.ndarray) else samples
    )
    with av.open(target, "w", format=spec.container) as container:
        stream: Any = container.add_stream(spec.codec, rate=spec.rate or sample_rate)
        stream.layout = "mono"
        if spec.bit_rate:
            stream.bit_rate = spec.bit_rate
        pts = 0
        for block in blocks:
            data = np.ascontiguousarray(block, dtype=np.int16).reshape(1, -1)
            if data.shape[1] == 0:
                continue
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = pts
            pts += data.shape[1]
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def encode(samples: np.ndarray | Iterable[np.ndarray], sample_rate: int, fmt: str = "wav") -> bytes:
    """The bytes of a ``fmt`` file holding ``samples`` (for request bodies in tests)."""
    buffer = io.BytesIO()
    write_samples(buffer, samples, sample_rate, fmt)
    return buffer.getvalue()


def _split_blocks(samples: np.ndarray) -> Iterator[np.ndarray]:
    """Cut one array into encoder-sized blocks."""
    for start in range(0, len(samples), BLOCK_SAMPLES):
        yield samples[start : start + BLOCK_SAMPLES]


def iter_decoded(
    source: str | Path | bytes,
    *,
    sample_rate: int = 16000,
    container_format: str | None = None,
) -> Iterator[np.ndarray]:
    """Decode the first audio stream of a file or bytes to mono int16 blocks at ``sample_rate``.

    ``container_format`` forces the demuxer (the emulator decodes what the request *claims*).
    PyAV errors propagate unchanged (``av.FFmpegError``); a source without audio raises
    ``ValueError``.
    """
    file: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(file, format=container_format) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)


def read(source: str | Path | bytes, sample_rate: int = 16000) -> np.ndarray:
    """Decode a whole (short) file to one mono int16 array at ``sample_rate``."""
    blocks = list(iter_decoded(source, sample_rate=sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
