"""Streaming decode: any input to mono 16-bit samples at a chosen rate, a block at a time.

This is one of the two places that call PyAV (``encode`` is the other); every PyAV exception
is translated to ``AudioError`` here, naming the file, and chained with ``from exc``.
Nothing here holds more than one decoded frame (a few thousand samples) at a time.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

from mimo_watchd.audio.source import Input
from mimo_watchd.errors import AudioError, IncompleteAudioError

_BAD_PACKETS_ALLOWED = 10  # isolated corrupt packets are skipped; a stream of them is fatal
_DEMUXER = {"gsm": "gsm"}  # raw formats without magic that FFmpeg cannot guess


def reason(exc: BaseException) -> str:
    """The useful part of a PyAV error message (without the file name it repeats)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).rstrip(".")


@contextmanager
def open_input(source: Input, fmt: str) -> Iterator[tuple[InputContainer, AudioStream]]:
    """Opens ``source`` with PyAV and yields it with its first audio stream; always closes it."""
    name = source.name
    try:
        container = av.open(source.for_pyav(), format=_DEMUXER.get(fmt), metadata_errors="ignore")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # not an audio problem: the file vanished or cannot be read
    except av.error.FFmpegError as exc:
        raise AudioError(f"{name}: cannot be read as {fmt} ({reason(exc)})") from exc
    try:
        if not isinstance(container, InputContainer) or not container.streams.audio:
            raise AudioError(f"{name}: contains no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise AudioError(f"{name}: no decoder for its audio codec")
        yield container, stream
    finally:
        container.close()


def frames(name: str, container: InputContainer, stream: AudioStream) -> Iterator[AudioFrame]:
    """Decoded frames of ``stream`` in order; skips isolated corrupt packets."""
    good = bad = 0
    seconds = 0.0
    try:
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                bad += 1
                if bad > _BAD_PACKETS_ALLOWED and bad > good:
                    raise AudioError(f"{name}: undecodable ({reason(exc)})") from exc
                continue
            good += 1
            for frame in decoded:
                if isinstance(frame, AudioFrame):
                    seconds += frame.samples / (frame.sample_rate or 1)
                    yield frame
    except av.error.FFmpegError as exc:
        if not good:
            raise AudioError(f"{name}: unreadable ({reason(exc)})") from exc
        # Readable audio that breaks off: a raw stream (ADTS, AMR) cut inside a frame.
        raise IncompleteAudioError(
            f"{name}: truncated: the audio breaks off after {seconds:.1f} s "
            f"({reason(exc)})") from exc


class _Mono:
    """Converts frames of any format to mono s16 at ``rate``, following format changes
    mid-stream."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._resampler: AudioResampler | None = None

    def convert(self, frame: AudioFrame | None) -> Iterator[np.ndarray]:
        if frame is not None and self._resampler is not None:
            try:
                yield from self._run(frame)
                return
            except ValueError:  # the stream changed rate or layout: drain, start a new one
                yield from self._run(None)
                self._resampler = None
        if frame is None and self._resampler is None:
            return
        if self._resampler is None:
            self._resampler = AudioResampler(format="s16", layout="mono", rate=self._rate)
        yield from self._run(frame)

    def _run(self, frame: AudioFrame | None) -> Iterator[np.ndarray]:
        assert self._resampler is not None
        for out in self._resampler.resample(frame):
            if out.samples:
                yield out.to_ndarray().reshape(-1).copy()


def iter_pcm(source: Input, fmt: str, rate: int, start: float = 0.0,
             ) -> Generator[tuple[int, np.ndarray], None, None]:
    """Yields ``(position, samples)``: mono int16 blocks at ``rate`` in order, from ``start``.

    Positions count samples from the first decoded sample. With ``start > 0`` the file is
    seeked and the first block is placed by its timestamp, so it may begin somewhat before
    ``start``; callers slice. Without timestamps it falls back to decoding from the beginning.
    """
    with open_input(source, fmt) as (container, stream):
        seeked = start > 0 and seek_to(container, stream, start)
        origin = stream.start_time or 0
        pos: int | None = None if seeked else 0
        mono = _Mono(rate)
        for frame in frames(source.name, container, stream):
            if pos is None:
                if frame.pts is None or stream.time_base is None:
                    break
                pos = max(0, round((frame.pts - origin) * stream.time_base * rate))
            for block in mono.convert(frame):
                yield pos, block
                pos += len(block)
        else:
            for block in mono.convert(None):
                assert pos is not None
                yield pos, block
                pos += len(block)
            return
    yield from iter_pcm(source, fmt, rate)  # timestamps missing after the seek: start over


def seek_to(container: InputContainer, stream: AudioStream, start: float) -> bool:
    """Seeks ``stream`` to ``start`` seconds (or just before); False if it cannot."""
    if stream.time_base is None:
        return False
    target = int(start / stream.time_base) + (stream.start_time or 0)
    try:
        container.seek(target, stream=stream)
    except av.error.FFmpegError:
        return False
    return True
