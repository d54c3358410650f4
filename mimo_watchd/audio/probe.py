"""``probe``: what a file is (sniffed from its bytes), how long, and whether it is whole.

Cost, by design cheap enough to run on every arrival:
- always: ``stat``, the first 4 KB (sniffing), a few header reads (``integrity``) and opening
  the container with PyAV (headers only);
- files whose declared length is at most ``FULL_DECODE_SECONDS`` (or unknown) are decoded
  completely: the duration is then measured, not read, and a shortfall against the header is
  caught. Decoding runs at several hundred times real time (5 minutes: ~0.1-0.4 s);
- longer files are decoded only at the head (is it decodable?) and, when a header declares
  the length, for the last ``TAIL_SECONDS`` after a seek (does the audio really reach the
  declared end?). mp3 skips that tail check: its Xing/frame check in ``integrity`` is exact,
  while seeking in a VBR mp3 is only approximate;
- mp3 files without a Xing/Info byte count are walked frame by frame (one read of the file,
  no decoding; ~0.5 s per hour of audio).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from av.audio.stream import AudioStream
from av.container import InputContainer

from mimo_watchd.audio import integrity
from mimo_watchd.audio.decode import frames, open_input, seek_to
from mimo_watchd.audio.sniff import HEAD_BYTES, describe, sniff
from mimo_watchd.audio.source import Input, Source
from mimo_watchd.errors import AudioError, IncompleteAudioError

FULL_DECODE_SECONDS = 300.0
HEAD_SECONDS = 2.0
TAIL_SECONDS = 10.0
_SEEK_FORMATS_EXACT = ("wav", "rf64", "aiff", "caf", "flac", "m4a", "mp4", "mov", "3gp",
                       "webm", "matroska", "asf")  # fmt: skip
_UNSUPPORTED = {"silk": "SILK voice (WeChat/QQ), which FFmpeg cannot decode"}


@dataclass(frozen=True)
class AudioInfo:
    """What probing found: the container (sniffed from the bytes), codec and length."""

    name: str  # the path, or the display name of an opened file (for messages)
    format: str  # container sniffed from the bytes: wav, mp3, m4a, mp4, ogg, opus, flac, ...
    codec: str  # e.g. pcm_s16le, mp3, aac, opus, flac, amr_nb, gsm
    duration_seconds: float
    sample_rate: int
    channels: int
    size: int  # bytes


def probe(source: Source | Input, name: str | None = None) -> AudioInfo:
    """Identifies and checks an audio file: a path, or an opened file (``name`` for messages)
    that is read through its descriptor, never reopened by name.

    Raises ``AudioError`` (naming the file) when it is empty, not audio, has no audio stream
    or cannot be decoded, and ``IncompleteAudioError`` when it looks unfinished (truncated or
    still being written). ``OSError`` if the file vanished or cannot be read.
    """
    inp = Input.of(source, name)
    p = inp.name
    st = inp.stat()
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(f"{p}: not a regular file")
    if st.st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    with inp.binary() as f:
        fmt = sniff(f, st.st_size)
        if fmt is None:
            f.seek(0)
            raise AudioError(f"{p}: not an audio file (looks like {describe(f.read(HEAD_BYTES))})")
        if fmt in _UNSUPPORTED:
            raise AudioError(f"{p}: {_UNSUPPORTED[fmt]}")
        structure = integrity.check(f, fmt, st.st_size)
    if structure.incomplete:
        raise IncompleteAudioError(f"{p}: {structure.incomplete}")
    with open_input(inp, fmt) as (container, stream):
        declared = structure.duration
        if declared is None and container.duration is not None and container.duration > 0:
            declared = container.duration / 1_000_000
        if declared is None and stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        ctx = stream.codec_context
        codec = ctx.codec.canonical_name
        rate, channels = ctx.sample_rate, ctx.channels
        if declared is None or declared <= FULL_DECODE_SECONDS:
            measured, rate, channels = _decode_all(p, container, stream)
            _check_length(p, measured, declared if structure.declares_length else None)
            duration = measured
        else:
            _decode_head(p, container, stream)
            if structure.declares_length and fmt in _SEEK_FORMATS_EXACT:
                _check_tail(p, container, stream, declared)
            duration = declared
    return AudioInfo(name=p, format=fmt, codec=codec, duration_seconds=duration,
                     sample_rate=rate, channels=channels, size=st.st_size)


def _decode_all(p: str, container: InputContainer, stream: AudioStream) -> tuple[float, int, int]:
    """Decodes everything; returns (seconds, sample rate, channels) as actually decoded."""
    seconds, rate, channels = 0.0, 0, 0
    for frame in frames(p, container, stream):
        seconds += frame.samples / frame.sample_rate
        rate, channels = rate or frame.sample_rate, channels or frame.layout.nb_channels
    if seconds == 0:
        raise AudioError(f"{p}: no audio could be decoded")
    return seconds, rate, channels


def _check_length(p: str, measured: float, declared: float | None) -> None:
    if declared is not None and measured < declared - max(0.25, 0.01 * declared):
        raise IncompleteAudioError(
            f"{p}: truncated: decodes to {measured:.2f} s of the {declared:.2f} s its header "
            "declares")


def _decode_head(p: str, container: InputContainer, stream: AudioStream) -> None:
    seconds = 0.0
    for frame in frames(p, container, stream):
        seconds += frame.samples / frame.sample_rate
        if seconds >= HEAD_SECONDS:
            return
    if seconds == 0:
        raise AudioError(f"{p}: no audio could be decoded")


def _check_tail(p: str, container: InputContainer, stream: AudioStream, declared: float) -> None:
    """Seeks to the last seconds and checks that audio reaches the declared end."""
    if not seek_to(container, stream, max(0.0, declared - TAIL_SECONDS)) or not stream.time_base:
        return
    origin, base = stream.start_time or 0, stream.time_base
    end = None
    for frame in frames(p, container, stream):
        if frame.pts is not None:
            end = float((frame.pts - origin) * base) + frame.samples / frame.sample_rate
    if end is None or end < declared - max(1.0, 0.01 * declared):
        got = "no audio" if end is None else f"audio up to {end:.1f} s"
        raise IncompleteAudioError(
            f"{p}: truncated: the header declares {declared:.1f} s but the file holds {got}")
