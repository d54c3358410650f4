"""``prepare``: turn any audio file into request-sized wav/mp3 chunks, streaming.

wav (16-bit PCM) and mp3 files that already fit one request are sent as they are. Anything
else is transcoded to 16 kHz mono in ``audio.chunk_format`` in two streaming passes:
1. ``prepare`` decodes the file once, keeping only a 10 ms level profile (4 bytes per 10 ms),
   and plans every cut from it, so ``spans`` is known (and deterministic) before any request
   is paid for: a retry or a recovery after a crash cuts the same chunks again.
2. ``iter_chunks`` decodes again and encodes chunk by chunk. At most two chunk encoders are
   open at once (where chunks overlap), so memory is bounded by ~two chunks whatever the length.
Measured on a 3-hour m4a (``bench/long_file_rss.py``, one core): pass 1 takes 12.5 s, pass 2
(mp3) 86 s, peak RSS 101 MB of which 47 MB are the interpreter and libraries. The API needs far
longer than both for 3 hours of audio (10K tokens per minute: ~8 minutes at best).
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, replace

import numpy as np

from mimo_watchd.audio.decode import SAMPLE_RATE, iter_pcm
from mimo_watchd.audio.encode import MIME, ChunkEncoder, b64_chars, max_seconds_for
from mimo_watchd.audio.plan import FRAME, Cut, LevelMeter, plan, split
from mimo_watchd.audio.probe import AudioInfo, probe
from mimo_watchd.config import AudioSettings
from mimo_watchd.errors import AudioError

PASSTHROUGH_CODECS = {"wav": ("pcm_s16le",), "mp3": ("mp3",)}
_PREROLL = 0.5  # seconds decoded before a span's start after a seek (decoder and resampler warm-up)


@dataclass(frozen=True)
class Span:
    """A planned chunk: seconds from the start of the audio; ``overlap_before`` repeats the
    end of the previous chunk (0.0 when the cut lies in a pause)."""

    index: int
    start: float
    end: float
    overlap_before: float = 0.0


@dataclass(frozen=True)
class Chunk:
    """One request's worth of audio: the encoded bytes of a span and their MIME type."""

    index: int
    start: float
    end: float
    data: bytes
    mime: str
    overlap_before: float = 0.0

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    @property
    def b64_chars(self) -> int:
        """Length of ``data`` once base64-encoded (what the request size limit counts)."""
        return b64_chars(len(self.data))


class PreparedAudio:
    """A probed, planned file: ``spans`` now, encoded ``Chunk``s lazily from ``iter_chunks``."""

    def __init__(self, info: AudioInfo, spans: list[Span], *, passthrough: bool,
                 audio: AudioSettings, max_b64_chars: int) -> None:
        self.info = info
        self.spans = spans
        self.passthrough = passthrough
        self.chunk_format = audio.chunk_format
        self.span_mime = MIME[audio.chunk_format]
        self.mime = MIME[info.format] if passthrough else self.span_mime
        self._audio = audio
        self._max_b64 = max_b64_chars

    def iter_chunks(self) -> Generator[Chunk, None, None]:
        """Yields every chunk in order, encoding each only when it is asked for."""
        if self.passthrough:
            span = self.spans[0]
            yield Chunk(0, span.start, span.end, self.info.path.read_bytes(), self.mime, 0.0)
            return
        with closing(iter_pcm(self.info.path, self.info.format)) as blocks:
            yield from self._encode_spans(blocks)

    def _encode_spans(self, blocks: Iterator[tuple[int, np.ndarray]]) -> Iterator[Chunk]:
        cuts = [(s, round(s.start * SAMPLE_RATE), round(s.end * SAMPLE_RATE)) for s in self.spans]
        open_: dict[int, ChunkEncoder] = {}
        nxt = 0  # first span not finished yet
        try:
            for pos, block in blocks:
                end = pos + len(block)
                for span, a, b in cuts[nxt:]:
                    if a >= end:
                        break
                    lo, hi = max(a, pos), min(b, end)
                    if lo < hi:
                        open_.setdefault(span.index, ChunkEncoder(self.chunk_format)).write(
                            block[lo - pos : hi - pos])
                while nxt < len(cuts) and cuts[nxt][2] <= end:
                    yield self._finish(cuts[nxt][0], open_.pop(cuts[nxt][0].index, None))
                    nxt += 1
            while nxt < len(cuts):  # the decode ended a little early: close what is left
                yield self._finish(cuts[nxt][0], open_.pop(cuts[nxt][0].index, None))
                nxt += 1
        finally:
            for encoder in open_.values():
                encoder.abort()

    def _finish(self, span: Span, encoder: ChunkEncoder | None) -> Chunk:
        data = (encoder or ChunkEncoder(self.chunk_format)).finish()
        if b64_chars(len(data)) > self._max_b64:
            raise AudioError(f"{self.info.path}: chunk {span.index} encodes to "
                             f"{b64_chars(len(data)):,} base64 characters, over the "
                             f"{self._max_b64:,} limit")
        return Chunk(span.index, span.start, span.end, data, self.span_mime, span.overlap_before)

    def encode_span(self, start: float, end: float) -> bytes:
        """Encodes ``[start, end)`` seconds alone (seek + decode of that range only), in
        ``chunk_format`` (MIME type ``span_mime``): for re-splitting a chunk that came back
        with ``finish_reason: length``."""
        a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        encoder = ChunkEncoder(self.chunk_format)
        try:
            for pos, block in self._range(start, end):
                lo, hi = max(a, pos), min(b, pos + len(block))
                if lo < hi:
                    encoder.write(block[lo - pos : hi - pos])
        except BaseException:
            encoder.abort()
            raise
        return encoder.finish()

    def split_span(self, start: float, end: float) -> tuple[Span, Span]:
        """Two halves of ``[start, end)`` cut in a pause near the middle (else with overlap);
        indexes 0 and 1 are relative to the span being split."""
        a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        meter = LevelMeter()
        for pos, block in self._range(start, end):
            lo, hi = max(a, pos), min(b, pos + len(block))
            if lo < hi:
                meter.feed(block[lo - pos : hi - pos])
        total = meter.samples
        overlap = round(self._audio.overlap_seconds * SAMPLE_RATE)
        first, second = split(meter.levels(), total, overlap=overlap,
                              threshold_db=self._audio.silence_threshold_db)
        return (_span(0, first, a), _span(1, second, a))

    def _range(self, start: float, end: float) -> Generator[tuple[int, np.ndarray], None, None]:
        """Decoded blocks covering ``[start, end)`` seconds, stopping once past ``end``."""
        b = round(end * SAMPLE_RATE)
        with closing(iter_pcm(self.info.path, self.info.format,
                              max(0.0, start - _PREROLL))) as blocks:
            for pos, block in blocks:
                if pos >= b:
                    return
                yield pos, block


def _span(index: int, cut: Cut, offset: int = 0) -> Span:
    return Span(index, (offset + cut.start) / SAMPLE_RATE, (offset + cut.end) / SAMPLE_RATE,
                cut.overlap / SAMPLE_RATE)


def prepare(path: str | os.PathLike[str], *, audio: AudioSettings,
            max_b64_chars: int = 9_500_000) -> PreparedAudio:
    """Probes ``path`` and plans its chunks (decoding it once unless it can be sent as is).

    Raises what ``probe`` raises, and ``AudioError`` if the audio cannot be decoded.
    """
    info = probe(path)
    fits = b64_chars(info.size) <= max_b64_chars
    if (info.codec in PASSTHROUGH_CODECS.get(info.format, ()) and fits and info.channels <= 2
            and info.duration_seconds <= audio.max_chunk_seconds):
        return PreparedAudio(info, [Span(0, 0.0, info.duration_seconds)], passthrough=True,
                             audio=audio, max_b64_chars=max_b64_chars)
    target_seconds = min(audio.max_chunk_seconds, max_seconds_for(audio.chunk_format,
                                                                  max_b64_chars))
    target = math.floor(target_seconds * SAMPLE_RATE) // FRAME * FRAME
    if target < SAMPLE_RATE:
        raise ValueError(f"max_b64_chars={max_b64_chars} leaves chunks under one second")
    meter = LevelMeter()
    with closing(iter_pcm(info.path, info.format)) as blocks:
        for _, block in blocks:
            meter.feed(block)
    if meter.samples == 0:
        raise AudioError(f"{info.path}: no audio could be decoded")
    cuts = plan(meter.levels(), meter.samples, target=target,
                search=round(audio.silence_search_seconds * SAMPLE_RATE),
                overlap=round(audio.overlap_seconds * SAMPLE_RATE),
                threshold_db=audio.silence_threshold_db)
    info = replace(info, duration_seconds=meter.samples / SAMPLE_RATE)
    return PreparedAudio(info, [_span(i, c) for i, c in enumerate(cuts)], passthrough=False,
                         audio=audio, max_b64_chars=max_b64_chars)
