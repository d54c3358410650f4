"""Recognising audio files by their first bytes, never by their name.

``sniff`` names the container (``wav``, ``mp3``, ``m4a`` ...) or returns ``None``;
``describe`` says in a few words what a non-audio file looks like, for error messages.
MPEG audio frame headers are parsed here too (``mpeg_frame``), shared with the integrity checks.
"""

from __future__ import annotations

from typing import BinaryIO, NamedTuple

HEAD_BYTES = 4096
_ID3_SCAN_BYTES = 65536  # after an ID3v2 tag, how far to look for the first audio frame
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_GSM_FRAME = 33

# MPEG audio bitrates in kbit/s, indexed [mpeg1?][layer][index]; layer 1..3.
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


class MpegFrame(NamedTuple):
    """An MPEG audio frame header: enough to find the next frame and to time the stream."""

    version: int  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer: int  # 1, 2 or 3
    sample_rate: int
    channels: int
    length: int  # bytes, header included
    samples: int  # per channel


def mpeg_frame(b: bytes | bytearray | memoryview, i: int = 0) -> MpegFrame | None:
    """Parses the MPEG audio frame header at ``b[i:]``; ``None`` if there is none."""
    if len(b) < i + 4 or b[i] != 0xFF or b[i + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (b[i + 1] >> 3) & 3, (b[i + 1] >> 1) & 3
    rate_index, bitrate_index = (b[i + 2] >> 2) & 3, b[i + 2] >> 4
    if version == 1 or layer_bits == 0 or rate_index == 3 or bitrate_index in (0, 15):
        return None  # reserved values, or free format (which we do not follow)
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[mpeg1, layer][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    padding = (b[i + 2] >> 1) & 1
    if layer == 1:
        length, samples = (12 * bitrate // rate + padding) * 4, 384
    elif layer == 2 or mpeg1:
        length, samples = 144 * bitrate // rate + padding, 1152
    else:
        length, samples = 72 * bitrate // rate + padding, 576
    channels = 1 if b[i + 3] >> 6 == 3 else 2
    return MpegFrame(version, layer, rate, channels, length, samples)


def id3v2_size(head: bytes) -> int:
    """Length of a leading ID3v2 tag (0 if there is none)."""
    if len(head) < 10 or head[:3] != b"ID3" or any(x & 0x80 for x in head[6:10]):
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def find_mpeg_sync(b: bytes, start: int = 0) -> int:
    """Offset of the first MPEG audio frame followed by a second one (-1 if none)."""
    i = b.find(b"\xff", start)
    while i != -1:
        frame = mpeg_frame(b, i)
        if frame is not None:
            nxt = mpeg_frame(b, i + frame.length)
            if (nxt is not None and nxt.layer == frame.layer) or i + frame.length >= len(b):
                return i
        i = b.find(b"\xff", i + 1)
    return -1


def _after_id3(f: BinaryIO, offset: int) -> str | None:
    """Sniffs what follows an ID3v2 tag (mp3 mostly, sometimes flac or ADTS aac)."""
    f.seek(offset)
    data = f.read(_ID3_SCAN_BYTES)
    stripped = data.lstrip(b"\0")  # some taggers pad beyond the declared size
    if stripped[:4] == b"fLaC":
        return "flac"
    if _is_adts(stripped):
        return "aac"
    i = find_mpeg_sync(data)
    if i == -1:
        return None
    frame = mpeg_frame(data, i)
    return "mp3" if frame is not None and frame.layer == 3 else "mp2"


def _is_adts(b: bytes) -> bool:
    return len(b) >= 7 and b[0] == 0xFF and b[1] & 0xF6 == 0xF0 and (b[2] >> 2) & 0xF < 13


def _is_gsm(f: BinaryIO, size: int, head: bytes) -> bool:
    """Raw GSM 06.10 (Asterisk ``.gsm``): 33-byte frames that each start with the nibble 0xD."""
    if size % _GSM_FRAME or size < 4 * _GSM_FRAME:
        return False
    frames = head[: len(head) - len(head) % _GSM_FRAME]
    return all(frames[i] >> 4 == 0xD for i in range(0, len(frames), _GSM_FRAME))


def _mp4_kind(head: bytes) -> str | None:
    box = head[4:8]
    if box == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "m4a"
        if brand[:3] in (b"3gp", b"3g2"):
            return "3gp"
        return "mov" if brand == b"qt  " else "mp4"
    if box in (b"moov", b"mdat", b"wide", b"free", b"skip") and head[:4] != b"\0\0\0\0":
        return "mov"
    return None


def _ogg_kind(head: bytes) -> str:
    first_packet = head[27 + head[26] :] if len(head) > 27 else b""
    if first_packet.startswith(b"OpusHead"):
        return "opus"
    if first_packet.startswith(b"Speex   "):
        return "speex"
    return "ogg"


def sniff(f: BinaryIO, size: int) -> str | None:
    """The audio container of the open file ``f`` (``size`` bytes), or ``None`` if not audio."""
    f.seek(0)
    head = f.read(HEAD_BYTES)
    four = head[:4]
    if four == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if four in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "rf64"
    if four == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if four == b"fLaC":
        return "flac"
    if four == b"OggS":
        return _ogg_kind(head)
    if four == b"caff":
        return "caf"
    if four == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "matroska"
    if head[:16] == _ASF_GUID:
        return "asf"
    if head.startswith(b"#!AMR"):
        return "amr"
    if four == b"wvpk":
        return "wavpack"
    if four == b".snd":
        return "au"
    if b"#!SILK" in head[:8]:
        return "silk"
    kind = _mp4_kind(head)
    if kind is not None:
        return kind
    tag = id3v2_size(head)
    if tag:
        return _after_id3(f, tag)
    if _is_adts(head):
        return "aac"
    if mpeg_frame(head) is not None and find_mpeg_sync(head) == 0:
        frame = mpeg_frame(head)
        return "mp3" if frame is not None and frame.layer == 3 else "mp2"
    if _is_gsm(f, size, head):
        return "gsm"
    return None


_KNOWN_OTHERS = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x7fELF", "an executable"),
    (b"MThd", "a MIDI file (notes, not recorded sound)"),
    (b"SQLite format 3", "an SQLite database"),
    (b"ID3", "an ID3 tag with no audio after it"),
)


def describe(head: bytes) -> str:
    """A few words on what a file that is not audio looks like, for the error message."""
    for magic, what in _KNOWN_OTHERS:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF":
        return f"a RIFF file of type {head[8:12].decode('latin-1')!r}, not WAVE"
    sample = head[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
        if len(sample) == 512:  # the cut may fall inside a multi-byte character
            try:
                text = sample[:-3].decode("utf-8")
            except UnicodeDecodeError:
                text = ""
    if text and "\0" not in text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return f"unrecognised data starting with {head[:8].hex(' ')}"
