"""Structural completeness checks: does the container look whole, or still being written?

These read headers (and, for a few formats, the tail of the file) without decoding anything:
- wav / rf64 / aiff / caf: the size of the audio data chunk against the size of the file;
- m4a / mp4 / mov / 3gp: the top-level boxes must include ``moov`` and none may run past the end
  (a phone recorder writes ``moov`` last, so an unfinished recording has none);
- mp3: the Xing/Info/VBRI header's byte or frame count against the file, otherwise a walk over
  the frame headers (no decoding) that must not end inside a frame;
- ogg / opus: the last page must be complete;
- webm / matroska: the Segment's declared size against the file;
- ADTS aac and AMR (raw frame streams): a walk over the frame headers.
The decode checks that complement these live in ``probe``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from mimo_watchd.audio.sniff import HEAD_BYTES, find_mpeg_sync, id3v2_size, mpeg_frame

_UNKNOWN32 = 0xFFFFFFFF
_WALK_BLOCK = 1 << 20
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


@dataclass(frozen=True)
class Structure:
    """What the container's headers say: a problem if it looks unfinished, and its length."""

    incomplete: str | None = None  # why the file looks unfinished (None: it looks whole)
    declares_length: bool = False  # a header states the length, so a decode can verify it
    duration: float | None = None  # exact length computed here, better than the demuxer's


def check(f: BinaryIO, fmt: str, size: int) -> Structure:
    """Checks the open file ``f`` (``size`` bytes, sniffed as ``fmt``) for signs of truncation."""
    if fmt in ("wav", "rf64"):
        return _riff(f, size)
    if fmt == "aiff":
        return _iff(f, size, 12, b"SSND", ">I", 4)
    if fmt == "caf":
        return _iff(f, size, 8, b"data", ">q", 8)
    if fmt in ("m4a", "mp4", "mov", "3gp"):
        return _mp4(f, size)
    if fmt == "mp3":
        return _mp3(f, size)
    if fmt in ("ogg", "opus", "speex"):
        return _ogg(f, size)
    if fmt in ("webm", "matroska"):
        return _ebml(f, size)
    if fmt in ("aac", "amr"):
        return _raw(f, size, fmt)
    return Structure(declares_length=fmt in ("flac", "asf"))


def _shortfall(declared_end: int, size: int) -> str | None:
    """A reason if data declared to end at ``declared_end`` is cut by the end of the file."""
    if declared_end <= size:
        return None
    return (f"truncated: the header declares {declared_end:,} bytes but the file has "
            f"{size:,} ({100 * size / declared_end:.0f}%)")


def _riff(f: BinaryIO, size: int) -> Structure:
    f.seek(0)
    head = f.read(12)
    riff_size = struct.unpack("<I", head[4:8])[0]
    pos, ds64_data = 12, None
    while pos + 8 <= size:
        f.seek(pos)
        hdr = f.read(36)
        cid, csize = hdr[:4], struct.unpack("<I", hdr[4:8])[0]
        if cid == b"ds64" and len(hdr) >= 28:
            ds64_data = struct.unpack("<Q", hdr[16:24])[0]
        if cid == b"data":
            if csize == _UNKNOWN32 and ds64_data is not None:
                csize = ds64_data
            if csize == _UNKNOWN32:
                return Structure()  # written to a pipe: the length was never filled in
            if csize == 0 and (riff_size == 0 or size > pos + 8):
                return Structure("the header is not finalised yet (data size 0)")
            return Structure(_shortfall(pos + 8 + csize, size), declares_length=True)
        pos += 8 + csize + (csize & 1)
    return Structure("the file ends before its audio data")


def _iff(f: BinaryIO, size: int, first: int, data_id: bytes, fmt: str, width: int) -> Structure:
    """AIFF (32-bit big-endian sizes) and CAF (64-bit, -1 = unknown) chunk walks."""
    pos = first
    while pos + 4 + width <= size:
        f.seek(pos)
        hdr = f.read(4 + width)
        cid, csize = hdr[:4], struct.unpack(fmt, hdr[4:])[0]
        if cid == data_id:
            if csize < 0:
                return Structure()  # CAF written as a stream: data runs to the end
            return Structure(_shortfall(pos + 4 + width + csize, size), declares_length=True)
        if csize < 0:
            break
        pos += 4 + width + csize + (csize & 1 if width == 4 else 0)
    return Structure("the file ends before its audio data")


def _mp4(f: BinaryIO, size: int) -> Structure:
    pos, has_moov = 0, False
    while pos + 8 <= size:
        f.seek(pos)
        hdr = f.read(16)
        box_size, box = struct.unpack(">I", hdr[:4])[0], hdr[4:8]
        if box_size == 1 and len(hdr) == 16:
            box_size = struct.unpack(">Q", hdr[8:16])[0]
        elif box_size == 0:
            box_size = size - pos
        if box_size < 8 or not all(32 <= c < 127 for c in box):
            break  # padding or junk after the last box
        if pos + box_size > size:
            return Structure(f"truncated: the {box.decode()!r} box runs past the end of the file"
                             f" ({size:,} of {pos + box_size:,} bytes)")
        has_moov = has_moov or box == b"moov"
        pos += box_size
    if not has_moov:
        return Structure("no 'moov' box: the recording was not finished (the index is "
                         "written last)")
    return Structure(declares_length=True)


def _mp3(f: BinaryIO, size: int) -> Structure:
    f.seek(0)
    head = f.read(HEAD_BYTES)
    start = id3v2_size(head)
    f.seek(start)
    block = f.read(65536)
    sync = find_mpeg_sync(block)
    first = mpeg_frame(block, sync) if sync >= 0 else None
    if first is None:
        return Structure()
    audio_start = start + sync
    audio_end = size - _trailing_tags(f, size)
    frames, nbytes = _xing(block[sync:])
    if nbytes:
        tolerance = max(2 * first.length, nbytes // 400)
        problem = None
        if audio_end - audio_start + tolerance < nbytes:
            problem = _shortfall(audio_start + nbytes, audio_end)
        return Structure(problem, declares_length=True)
    walked, cut = _walk_frames(f, audio_start, audio_end, _mpeg_length)
    if cut:
        return Structure("truncated: the file ends inside an MPEG audio frame")
    if frames and walked + max(2, frames // 400) < frames:
        return Structure(f"truncated: the header declares {frames:,} frames but the file holds "
                         f"{walked:,}", declares_length=True)
    seconds = (frames or walked) * first.samples / first.sample_rate
    return Structure(declares_length=bool(frames), duration=seconds)


def _trailing_tags(f: BinaryIO, size: int) -> int:
    """Bytes of ID3v1 / APEv2 tags at the end of an mp3 file."""
    end = size
    if size >= 128:
        f.seek(size - 128)
        if f.read(3) == b"TAG":
            end -= 128
    if end >= 32:
        f.seek(end - 32)
        footer = f.read(32)
        if footer[:8] == b"APETAGEX":
            end -= struct.unpack("<I", footer[12:16])[0] + (32 if footer[23] & 0x80 else 0)
    return size - max(end, 0)


def _xing(frame: bytes) -> tuple[int, int]:
    """(frames, bytes) from a Xing/Info or VBRI header in the first frame; 0 where absent."""
    for tag in (b"Xing", b"Info"):
        i = frame.find(tag, 4, 40)
        if i != -1 and len(frame) >= i + 16:
            flags = struct.unpack(">I", frame[i + 4 : i + 8])[0]
            fields, j = [0, 0], i + 8
            for n in range(2):
                if flags & (1 << n):
                    fields[n] = struct.unpack(">I", frame[j : j + 4])[0]
                    j += 4
            return fields[0], fields[1]
    if frame[36:40] == b"VBRI" and len(frame) >= 54:
        nbytes, frames = struct.unpack(">II", frame[46:54])
        return frames, nbytes
    return 0, 0


_AMR_NB = (12, 13, 15, 17, 19, 20, 26, 31, 5, 6, 5, 5, 0, 0, 0, 0)
_AMR_WB = (17, 23, 32, 36, 40, 46, 50, 58, 60, 5, 0, 0, 0, 0, 0, 0)
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
               8000, 7350)
FrameLength = Callable[[bytes, int], "int | None"]


def _mpeg_length(b: bytes, i: int) -> int | None:
    frame = mpeg_frame(b, i)
    return frame.length if frame is not None else None


def _adts_length(b: bytes, i: int) -> int | None:
    if len(b) < i + 7 or b[i] != 0xFF or b[i + 1] & 0xF6 != 0xF0:
        return None
    length = ((b[i + 3] & 0x03) << 11) | (b[i + 4] << 3) | (b[i + 5] >> 5)
    return length if length >= 7 else None


def _walk_frames(f: BinaryIO, pos: int, end: int, length_at: FrameLength) -> tuple[int, bool]:
    """Counts frames by hopping header to header; True if the last frame is cut by the end.

    Costs one read of the file and a Python step per frame (~40-50 frames per second of
    audio, ~0.5 s per hour); used for raw streams (ADTS, AMR, mp3 without a Xing byte count).
    """
    frames = 0
    f.seek(pos)
    buf, base = f.read(_WALK_BLOCK), pos
    while pos < end:
        if pos + 16 > base + len(buf):
            f.seek(pos)
            buf, base = f.read(_WALK_BLOCK), pos
        length = length_at(buf, pos - base)
        if length is None:  # a header cut by the end, or junk / a tag we cannot judge
            return frames, frames > 0 and end - pos < 16 and buf[pos - base] == 0xFF
        if pos + length > end:
            return frames, frames > 0
        frames += 1
        pos += length
    return frames, False


def _raw(f: BinaryIO, size: int, fmt: str) -> Structure:
    """ADTS aac and AMR: no header states a length, but counting frames gives it exactly, and
    a cut shows as a partial last frame."""
    f.seek(0)
    head = f.read(HEAD_BYTES)
    length_at: FrameLength
    if fmt == "amr":
        wide = head.startswith(b"#!AMR-WB\n")
        sizes = _AMR_WB if wide else _AMR_NB
        start, frame_seconds = len(b"#!AMR-WB\n" if wide else b"#!AMR\n"), 0.02

        def length_at(b: bytes, i: int) -> int | None:
            return 1 + sizes[(b[i] >> 3) & 0x0F] if i < len(b) else None
    else:
        start, length_at = id3v2_size(head), _adts_length
        f.seek(start)
        rate_index = (f.read(3)[2:3] or b"\xff")[0] >> 2 & 0x0F
        frame_seconds = 1024 / _ADTS_RATES[rate_index] if rate_index < len(_ADTS_RATES) else 0
    frames, cut = _walk_frames(f, start, size, length_at)
    if cut:
        return Structure(f"truncated: the file ends inside an {'AMR' if fmt == 'amr' else 'ADTS'}"
                         " frame")
    return Structure(duration=frames * frame_seconds or None)


def _ogg(f: BinaryIO, size: int) -> Structure:
    """Walks the pages of the file's tail; the last one must end exactly at the end."""
    start = max(0, size - 2 * _OGG_MAX_PAGE)
    f.seek(start)
    tail = f.read()
    i = tail.find(b"OggS")
    while i != -1:
        state = _ogg_walk(tail, i)
        if state != "broken":
            cut = state == "cut"
            return Structure("truncated: the last Ogg page is incomplete" if cut else None)
        i = tail.find(b"OggS", i + 1)
    return Structure()


def _ogg_walk(b: bytes, pos: int) -> str:
    """'end' if pages from ``pos`` chain to the end, 'cut' if the last is partial, else 'broken'."""
    while pos < len(b):
        if b[pos : pos + 4] != b"OggS":
            return "broken"
        if pos + 27 > len(b) or pos + 27 + b[pos + 26] > len(b):
            return "cut"
        nseg = b[pos + 26]
        length = 27 + nseg + sum(b[pos + 27 : pos + 27 + nseg])
        if pos + length > len(b):
            return "cut"
        pos += length
    return "end"


def _vint(b: bytes, i: int) -> tuple[int, int, bool]:
    """An EBML variable-length integer at ``b[i]``: (value, length, all value bits set)."""
    first = b[i]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or i + length > len(b):
        raise ValueError("bad EBML integer")
    value = first & (0xFF >> length)
    for k in range(1, length):
        value = (value << 8) | b[i + k]
    return value, length, value == (1 << (7 * length)) - 1


def _ebml(f: BinaryIO, size: int) -> Structure:
    f.seek(0)
    head = f.read(HEAD_BYTES)
    try:
        header_size, n, _ = _vint(head, 4)
        pos = 4 + n + header_size
        if head[pos : pos + 4] != b"\x18\x53\x80\x67":
            return Structure()
        seg_size, n, unknown = _vint(head, pos + 4)
    except (ValueError, IndexError):
        return Structure("the file ends inside its header" if size < HEAD_BYTES else None)
    if unknown:
        return Structure()  # written live (browser MediaRecorder): the size is never filled in
    return Structure(_shortfall(pos + 4 + n + seg_size, size), declares_length=True)
