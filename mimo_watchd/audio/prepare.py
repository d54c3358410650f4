"""``prepare``: a recording as a stream of clips ready to send, planned and encoded while it
is decoded, in one pass.

``iter_clips`` decodes the file once: each block goes to the level meter and the planner
(``plan.Planner``), and into a buffer of the samples a future clip may still need; each clip is
encoded as soon as it is decided. The first clip is out after ~``max_clip_seconds`` of audio
has been decoded, whatever the file's length, and memory is bounded by about one clip of
samples plus the planner's look-ahead (``skip_silence_seconds`` and margins).

A wav (16-bit PCM) or mp3 that fits one clip and one request, and in which nothing would be
left out, is sent as it is (``passthrough``): deciding that takes one decode of that short
file inside ``prepare``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from mimo_watchd.audio.decode import iter_pcm
from mimo_watchd.audio.encode import MIME, ChunkEncoder, b64_chars, clip_rate, max_seconds_for
from mimo_watchd.audio.gate import SpeechGate
from mimo_watchd.audio.levels import LevelMeter, frame_samples
from mimo_watchd.audio.params import AudioParams
from mimo_watchd.audio.pcm import PcmBuffer
from mimo_watchd.audio.plan import Cut, Planner, halve
from mimo_watchd.audio.probe import AudioInfo, probe
from mimo_watchd.audio.source import Input, Source
from mimo_watchd.errors import AudioError

PASSTHROUGH_CODECS = {"wav": ("pcm_s16le",), "mp3": ("mp3",)}
_PREROLL = 0.5  # seconds decoded before a span's start after a seek (decoder and resampler warm-up)


@dataclass(frozen=True)
class ClipSpan:
    """A planned clip: the source ranges it sends (seconds, in order) and the seconds at its
    start that repeat the end of the previous clip (0.0 when it was cut in a pause)."""

    index: int
    pieces: tuple[tuple[float, float], ...]
    overlap_before: float
    silence_db: float  # frames at or under this level counted as silence when it was planned

    @property
    def start(self) -> float:
        """Source time of its first sample."""
        return self.pieces[0][0]

    @property
    def end(self) -> float:
        """Source time just after its last sample."""
        return self.pieces[-1][1]

    @property
    def sent_seconds(self) -> float:
        """Audio actually sent: less than ``end - start`` when a silence inside was left out."""
        return sum(b - a for a, b in self.pieces)

    @property
    def key(self) -> str:
        """Identifies the audio sent (for the journal): ``start-end``, plus every piece when a
        silence inside was left out."""
        if len(self.pieces) == 1:
            return f"{self.start:.3f}-{self.end:.3f}"
        return "+".join(f"{a:.3f}-{b:.3f}" for a, b in self.pieces)

    def source_time(self, sent: float) -> float:
        """The source time of the moment ``sent`` seconds into the clip's audio (for cue
        times: a left-out silence is skipped over)."""
        for a, b in self.pieces:
            if sent <= b - a:
                return a + max(0.0, sent)
            sent -= b - a
        return self.end


@dataclass(frozen=True)
class Clip(ClipSpan):
    """One request's worth of audio: a planned clip with its encoded bytes and MIME type."""

    data: bytes
    mime: str

    @property
    def b64_chars(self) -> int:
        """Length of ``data`` once base64-encoded (what the request size limit counts)."""
        return b64_chars(len(self.data))


@dataclass(frozen=True)
class AudioSummary:
    """What a complete pass over the file found: lengths, levels, and why nothing was sent."""

    audio_seconds: float  # the whole file, as decoded
    sent_seconds: float  # the audio of every clip (overlaps counted twice, as they are sent)
    clips: int
    floor_db: float  # the file's noise floor (dBFS)
    peak_db: float  # its loudest 10 ms (dBFS)
    silence_db: float  # the level at or under which frames counted as silence at the end
    no_speech: str | None  # why there is no clip at all (None: there are clips)


class PreparedAudio:
    """A probed file and how it will be cut: clips lazily from ``iter_clips``."""

    def __init__(self, source: Input, info: AudioInfo, params: AudioParams, *,
                 subtitles: bool) -> None:
        self.source = source
        self.info = info
        self.params = params
        self.rate = clip_rate(info.sample_rate, params.clip_format, params.max_sample_rate)
        self.clip_mime = MIME[params.clip_format]
        self._frame = frame_samples(self.rate)
        seconds = min(params.subtitle_clip_seconds if subtitles else params.max_clip_seconds,
                      max_seconds_for(params.clip_format, params.max_b64_chars, self.rate))
        if seconds < 1.0:
            raise ValueError(f"max_b64_chars={params.max_b64_chars} leaves clips under one "
                             "second")
        self.clip_seconds = seconds
        self._subtitles = subtitles
        self._summary: AudioSummary | None = None
        self._whole: ClipSpan | None = None  # the one clip of a file sent as it is

    @property
    def passthrough(self) -> bool:
        """Whether the file is sent as it is, in one clip."""
        return self._whole is not None

    @property
    def mime(self) -> str:
        """The MIME type of what ``iter_clips`` yields."""
        return MIME[self.info.format] if self.passthrough else self.clip_mime

    @property
    def summary(self) -> AudioSummary:
        """The summary of the last complete pass of ``iter_clips``."""
        if self._summary is None:
            raise RuntimeError("iter_clips has not run to the end yet")
        return self._summary

    def iter_clips(self) -> Generator[Clip, None, None]:
        """Yields every clip in order, each encoded only when it is decided and asked for; no
        clip at all when the file holds no speech (``summary.no_speech`` says why)."""
        if self._whole is not None:
            span = self._whole
            yield Clip(span.index, span.pieces, 0.0, span.silence_db,
                       self.source.read_bytes(), self.mime)
            return
        for span, data in self._spans(encode=True):
            assert data is not None
            if b64_chars(len(data)) > self.params.max_b64_chars:
                raise AudioError(f"{self.info.name}: clip {span.index} encodes to "
                                 f"{b64_chars(len(data)):,} base64 characters, over the "
                                 f"{self.params.max_b64_chars:,} limit")
            yield Clip(span.index, span.pieces, span.overlap_before, span.silence_db, data,
                       self.clip_mime)

    def encode(self, span: ClipSpan) -> bytes:
        """Encodes the pieces of ``span`` alone (a seek, then a decode of that range only), in
        ``params.clip_format`` (MIME type ``clip_mime``): for re-splitting a clip that came
        back with ``finish_reason: length``."""
        encoder = ChunkEncoder(self.params.clip_format, self.rate)
        try:
            for block in self._pieces(span):
                encoder.write(block)
        except BaseException:
            encoder.abort()
            raise
        return encoder.finish()

    def split(self, span: ClipSpan) -> tuple[ClipSpan, ClipSpan]:
        """Two halves of ``span``: cut where a left-out silence was, else in a pause near the
        middle, else with an overlap; indexes 0 and 1 are relative to the span split."""
        meter = LevelMeter(self._frame)
        levels = [meter.feed(block) for block in self._pieces(span)]
        levels.append(meter.finish())
        joins, at = [], 0
        for a, b in span.pieces[:-1]:
            at += self._sample(b) - self._sample(a)
            joins.append(at // self._frame)
        first, second = halve(np.concatenate(levels), joins, silence_db=span.silence_db,
                              min_pause=self._min_pause(),
                              overlap=self._frames(self.params.overlap_seconds))
        return (self._part(span, 0, first, meter.samples),
                self._part(span, 1, second, meter.samples))

    def _spans(self, *, encode: bool) -> Iterator[tuple[ClipSpan, bytes | None]]:
        """The planned clips of one decode pass, with their bytes when ``encode``."""
        p = self.params
        gate = SpeechGate(skip=self._frames(p.skip_silence_seconds) if p.skip_silence else None,
                          margin=self._frames(p.silence_margin_seconds),
                          above_floor_db=p.speech_above_floor_db,
                          silence_floor_db=p.silence_floor_db,
                          sound_ceiling_db=p.sound_ceiling_db)
        planner = Planner(gate, target=int(self.clip_seconds * self.rate) // self._frame,
                          overlap=self._frames(p.overlap_seconds),
                          min_pause=self._min_pause(), end_at_gaps=self._subtitles)
        meter, buffer = LevelMeter(self._frame), PcmBuffer()
        index, sent = 0, 0.0
        with closing(iter_pcm(self.source, self.info.format, self.rate)) as blocks:
            for block in _batched(blocks, self.rate // 2):
                buffer.append(block)
                for cut in planner.feed(meter.feed(block)):
                    span = self._span(index, cut, buffer.end)
                    index, sent = index + 1, sent + span.sent_seconds
                    yield span, self._encoded(cut, buffer) if encode else None
                buffer.release(planner.next * self._frame)
        if meter.samples == 0:
            raise AudioError(f"{self.info.name}: no audio could be decoded")
        for cut in planner.feed(meter.finish()) + planner.finish():
            span = self._span(index, cut, buffer.end)
            index, sent = index + 1, sent + span.sent_seconds
            yield span, self._encoded(cut, buffer) if encode else None
        no_speech = None
        if not index:
            no_speech = (f"no speech: no 0.1 s of sound above {gate.silence_db:.1f} dBFS (noise "
                         f"floor {gate.floor_db:.1f} dBFS, peak {gate.noise.peak_db:.1f} dBFS)")
        self._summary = AudioSummary(
            audio_seconds=meter.samples / self.rate, sent_seconds=sent, clips=index,
            floor_db=gate.floor_db, peak_db=gate.noise.peak_db, silence_db=gate.silence_db,
            no_speech=no_speech)

    def _encoded(self, cut: Cut, buffer: PcmBuffer) -> bytes:
        encoder = ChunkEncoder(self.params.clip_format, self.rate)
        try:
            for a, b in cut.pieces:
                encoder.write(buffer.take(a * self._frame, min(b * self._frame, buffer.end)))
        except BaseException:
            encoder.abort()
            raise
        return encoder.finish()

    def _span(self, index: int, cut: Cut, total: int) -> ClipSpan:
        """The clip ``cut`` in seconds (``total``: samples decoded so far)."""
        f, rate = self._frame, self.rate
        return ClipSpan(index, tuple((a * f / rate, min(b * f, total) / rate)
                                     for a, b in cut.pieces),
                        cut.overlap * f / rate, cut.silence_db)

    def _part(self, span: ClipSpan, index: int, part: tuple[int, int, int],
              total: int) -> ClipSpan:
        """The frames ``part`` (start, end, overlap) of ``span``'s sent audio as a span."""
        first, last = part[0] * self._frame, min(part[1] * self._frame, total)
        pieces, at = [], 0
        for a, b in span.pieces:
            sa, sb = self._sample(a), self._sample(b)
            lo, hi = max(first, at), min(last, at + sb - sa)
            if lo < hi:
                pieces.append(((sa + lo - at) / self.rate, (sa + hi - at) / self.rate))
            at += sb - sa
        return ClipSpan(index, tuple(pieces), part[2] * self._frame / self.rate, span.silence_db)

    def _pieces(self, span: ClipSpan) -> Iterator[np.ndarray]:
        """The samples of ``span``'s pieces, in order (one seek, then a decode to its end)."""
        ranges = [(self._sample(a), self._sample(b)) for a, b in span.pieces]
        stop = ranges[-1][1]
        with closing(iter_pcm(self.source, self.info.format, self.rate,
                              max(0.0, span.start - _PREROLL))) as blocks:
            for pos, block in blocks:
                if pos >= stop:
                    return
                for a, b in ranges:
                    lo, hi = max(a, pos), min(b, pos + len(block))
                    if lo < hi:
                        yield block[lo - pos : hi - pos]

    def decide_passthrough(self) -> None:
        """Sends the file as it is if it is a wav or mp3 that fits one clip and one request and
        nothing in it would be left out (one decode of that short file)."""
        info, p = self.info, self.params
        if (info.codec not in PASSTHROUGH_CODECS.get(info.format, ()) or info.channels > 2
                or b64_chars(info.size) > p.max_b64_chars
                or info.duration_seconds > self.clip_seconds):
            return
        spans = [span for span, _ in self._spans(encode=False)]
        if (len(spans) == 1 and spans[0].pieces == ((0.0, self.summary.audio_seconds),)):
            self._whole = spans[0]

    def _min_pause(self) -> int:
        # A 200 ms pause can straddle frame edges: 19 whole 10 ms frames.
        return max(1, self._frames(self.params.min_pause_seconds) - 1)

    def _sample(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def _frames(self, seconds: float) -> int:
        return round(seconds * self.rate / self._frame)


def _batched(blocks: Iterator[tuple[int, np.ndarray]], size: int) -> Iterator[np.ndarray]:
    """The decoder's blocks (~1,000 samples each) joined into blocks of ``size`` or more (the
    last may be shorter): per-block work in Python is then paid ~20 times a second of audio,
    not ~400 times."""
    pending: list[np.ndarray] = []
    have = 0
    for _, block in blocks:
        pending.append(block)
        have += len(block)
        if have >= size:
            yield np.concatenate(pending)
            pending, have = [], 0
    if pending:
        yield np.concatenate(pending)


def prepare(source: Source | Input, params: AudioParams, *, subtitles: bool = False,
            name: str | None = None) -> PreparedAudio:
    """Probes ``source`` (a path, or an opened file named ``name``) and readies its clips.

    ``subtitles`` aims clips at ``params.subtitle_clip_seconds`` and ends one at every silence
    left out. Raises what ``probe`` raises, ``AudioError`` if the audio cannot be decoded, and
    ``ValueError`` if ``params.max_b64_chars`` leaves clips under one second.
    """
    inp = Input.of(source, name)
    prepared = PreparedAudio(inp, probe(inp), params, subtitles=subtitles)
    prepared.decide_passthrough()
    return prepared
