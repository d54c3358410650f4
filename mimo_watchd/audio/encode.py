"""Encoding mono 16-bit samples into one in-memory wav or mp3 file per clip.

Clips keep the source's sample rate up to ``AudioParams.max_sample_rate`` (24 kHz, the rate the
model's front end resamples everything to), never more (``clip_rate``).
mp3 is LAME at ``MP3_BITRATE`` CBR (48 kbit/s: 5 minutes fit in 2.4 M base64 characters, a
quarter of the request limit, so the clip length and not the size limit decides) with
``MP3_QUALITY`` (LAME ``-q 7``). Measured at 24 kHz on speech-like audio
(``bench/audio_formats.py``): a log-mel distance to the original of 1.17 dB (1.83 dB at 16 kHz;
32 kbit/s would be 14.6 dB at 24 kHz, its low-pass cuts the voice), and ``-q 7`` gives the same
distance as ``-q 5`` for 37 % less CPU (199x instead of 126x real time on one core), which
matters for the time to the first clip. The muxer writes an ID3v2 tag (the most widely sniffed
mp3 signature) and a Xing/Info frame (an exact duration for the API).
"""

from __future__ import annotations

import contextlib
import io
import math

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import OutputContainer

from mimo_watchd.audio.decode import reason
from mimo_watchd.errors import AudioError

MP3_BITRATE = 48_000
MP3_QUALITY = 7
MIME = {"wav": "audio/wav", "mp3": "audio/mpeg"}
_CODEC = {"wav": "pcm_s16le", "mp3": "libmp3lame"}
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000)  # what MPEG-2/2.5 layer III can carry
# Bytes besides the audio itself: wav header and LIST chunk (78 bytes measured); mp3 ID3 tag,
# Xing frame, the encoder's delay and padding frames (837 bytes measured at 48 kbit/s).
_OVERHEAD = {"wav": 1024, "mp3": 1024}


def b64_chars(nbytes: int) -> int:
    """Length of the base64 encoding of ``nbytes`` bytes."""
    return 4 * math.ceil(nbytes / 3)


def clip_rate(source_rate: int, fmt: str, max_rate: int) -> int:
    """The sample rate clips are sent at: the source's, capped at ``max_rate``; for mp3 the
    highest rate LAME takes that does not exceed that (8 kHz at least, its lowest)."""
    rate = min(source_rate, max_rate) if source_rate > 0 else max_rate
    if fmt == "mp3":
        return max([r for r in MP3_RATES if r <= rate], default=MP3_RATES[0])
    return rate


def bytes_per_second(fmt: str, rate: int, bit_rate: int = MP3_BITRATE) -> float:
    """Upper bound of the encoded size per second of audio (mp3 with 2% headroom)."""
    return 2.0 * rate if fmt == "wav" else bit_rate / 8 * 1.02


def max_seconds_for(fmt: str, max_b64_chars: int, rate: int, bit_rate: int = MP3_BITRATE) -> float:
    """The longest clip whose encoding in ``fmt`` stays within ``max_b64_chars`` of base64."""
    usable = max_b64_chars // 4 * 3 - _OVERHEAD[fmt]
    return max(0.0, usable / bytes_per_second(fmt, rate, bit_rate))


class ChunkEncoder:
    """Encodes one clip: feed ``write`` with int16 blocks, then ``finish`` returns the bytes."""

    def __init__(self, fmt: str, rate: int, *, bit_rate: int = MP3_BITRATE,
                 quality: int = MP3_QUALITY) -> None:
        if fmt not in _CODEC:
            raise ValueError(f"unknown clip format {fmt!r}")
        self.fmt = fmt
        self.rate = rate
        self._buf = io.BytesIO()
        self._pts = 0
        try:
            self._out: OutputContainer = av.open(self._buf, "w", format=fmt)
            stream = self._out.add_stream(_CODEC[fmt], rate=rate, layout="mono")
            assert isinstance(stream, AudioStream)
            self._stream = stream
            if fmt == "mp3":
                self._stream.bit_rate = bit_rate
                self._stream.codec_context.options = {"compression_level": str(quality)}
        except av.error.FFmpegError as exc:
            raise AudioError(f"cannot start a {fmt} encoder ({reason(exc)})") from exc

    def write(self, samples: np.ndarray) -> None:
        """Appends mono int16 samples at the encoder's rate."""
        if not len(samples):
            return
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
            format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += len(samples)
        self._encode(frame)

    def finish(self) -> bytes:
        """Flushes the encoder, closes the file and returns its bytes."""
        self._encode(None)
        try:
            self._out.close()
        except av.error.FFmpegError as exc:
            raise AudioError(f"{self.fmt} encoder failed ({reason(exc)})") from exc
        return self._buf.getvalue()

    def abort(self) -> None:
        """Closes an encoder whose clip is no longer wanted."""
        with contextlib.suppress(av.error.FFmpegError):  # the bytes are thrown away anyway
            self._out.close()

    def _encode(self, frame: AudioFrame | None) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
        except av.error.FFmpegError as exc:
            self._out.close()
            raise AudioError(f"{self.fmt} encoder failed ({reason(exc)})") from exc

