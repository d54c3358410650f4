"""One file's transcript: the audio layer's clips sent in parallel, each paid answer journaled
first, the texts joined and timed.

Used by both ``mimo-watchd transcribe`` and the daemon. Clips come lazily from the audio
layer while the file is still being decoded (the first request leaves once about one clip of
audio is decoded, whatever the file's length; memory stays around one clip per request in
flight) and go out concurrently within the client's shared limits. Each clip's paid response
goes to the ``Journal``, keyed by the clip's ``key``, before it is interpreted; a clip already
in the journal is never sent again, so a retry or a restart re-sends only what is missing. A
file in which the audio layer finds no speech makes no request at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mimo_watchd import joining
from mimo_watchd.audio import (
    AudioInfo,
    AudioParams,
    AudioSummary,
    ClipSpan,
    PreparedAudio,
    Source,
    prepare,
)
from mimo_watchd.client import MimoClient
from mimo_watchd.config import AudioSettings
from mimo_watchd.errors import ApiError, AudioError, OutputTruncatedError, TransientApiError
from mimo_watchd.fsutil import sha256_file
from mimo_watchd.inputs import InputFile
from mimo_watchd.looping import find_loop
from mimo_watchd.prepgate import PrepareGate
from mimo_watchd.protocol import (
    USAGE_FIELDS,
    Transcript,
    error_in_body,
    parse_completion,
    read_usage,
)
from mimo_watchd.timeline import Pieces, Segment
from mimo_watchd.timestamps import now_iso

MIN_RESPLIT_SECONDS = 4.0
LOOPING = "looping"  # why a span was re-split: its answer looped (looping.find_loop)


class Journal(Protocol):
    """Where paid responses are kept, keyed by the audio span they answer."""

    def lookup(self, key: str) -> dict[str, Any] | None: ...

    def record(self, key: str, raw: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Discarded:
    """A paid answer that was not used: its span was re-split (``reason``: the answer's
    finish_reason, length or repetition_truncation, or looping). It was billed all the same."""

    reason: str
    detail: str
    start: float
    end: float
    request_id: str | None
    usage: dict[str, Any]
    attempts: int
    from_journal: bool


@dataclass
class ChunkResult:
    """What answered one clip (a request's worth of audio)."""

    index: int
    start: float
    end: float
    text: str
    request_id: str | None
    usage: dict[str, Any]
    attempts: int
    api_seconds: float
    overlapped: bool
    from_journal: bool = False
    resplit: tuple[str, ...] = ()  # why the spans holding it were re-split, outermost first
    discarded: tuple[Discarded, ...] = ()  # answers paid for and re-split, first half only
    looping: str | None = None  # a loop found in a span too short to halve (its text kept)
    pieces: Pieces = ()  # the source ranges sent (empty: start to end)
    overlap_seconds: float = 0.0  # sent audio at its start that repeats the previous clip

    @property
    def sent(self) -> Pieces:
        """The source ranges sent, in order."""
        return self.pieces or ((self.start, self.end),)

    @property
    def sent_seconds(self) -> float:
        """Seconds of audio sent."""
        return sum(b - a for a, b in self.sent)


@dataclass
class TranscriptResult:
    path: Path
    sha256: str
    info: AudioInfo
    text: str
    language: str
    model: str
    chunks: list[ChunkResult]
    started_at: str
    finished_at: str
    api_seconds: float
    usage: dict[str, Any] = field(default_factory=dict)  # sum_usage of the chunks
    segments: list[Segment] = field(default_factory=list)  # one per chunk, in order
    summary: AudioSummary | None = None  # what the audio layer measured (levels, lengths)
    no_speech_reason: str | None = None  # why the transcript is empty (None: it is not)

    @property
    def attempts(self) -> int:
        return max((c.attempts for c in self.chunks), default=0)

    @property
    def api_calls(self) -> int:
        """HTTP requests made for this transcript, those of discarded answers included."""
        return sum(c.attempts + sum(d.attempts for d in c.discarded) for c in self.chunks)

    @property
    def sent_seconds(self) -> float:
        """Seconds of audio in the requests this transcript was made from."""
        return sum(c.sent_seconds for c in self.chunks)


def paid_usages(chunks: list[ChunkResult]) -> list[dict[str, Any]]:
    """The usage object of every answer paid for a file: the chunks', and those of answers
    discarded because their span was re-split (billed all the same)."""
    return [u for c in chunks for u in (c.usage, *(d.usage for d in c.discarded))]


def sum_usage(chunks: list[ChunkResult]) -> dict[str, Any]:
    """What every paid answer of a file reported (``paid_usages``), summed: each field is the
    sum of the values the answers gave (kept as sent, so 4.6 + 4 is 8.6), or None when none
    gave it; ``complete`` says whether every answer gave every field. A file with no paid
    answer (no speech: nothing sent) paid nothing: every field is 0."""
    if not paid_usages(chunks):
        return {**dict.fromkeys(USAGE_FIELDS, 0), "complete": True}
    known: dict[str, list[int | float]] = {k: [] for k in USAGE_FIELDS}
    complete = True
    for usage in paid_usages(chunks):
        for k, v in read_usage(usage).items():
            if v is None:
                complete = False
            else:
                known[k].append(v)
    total: dict[str, Any] = {k: _sum(values) for k, values in known.items()}
    total["complete"] = complete
    return total


def _sum(values: list[int | float]) -> int | float | None:
    if not values:
        return None
    total = sum(values)
    # Sums of decimals such as 4.6 carry binary noise (13.799999999999999): keep 6 places.
    return round(total, 6) if isinstance(total, float) else total


def audio_params(audio: AudioSettings, max_b64_chars: int) -> AudioParams:
    """The audio layer's parameters from the configuration (``api.max_request_b64_chars`` is
    the request limit; the levels the configuration does not expose keep their defaults)."""
    return AudioParams(
        max_clip_seconds=audio.max_clip_seconds,
        subtitle_clip_seconds=audio.subtitle_clip_seconds, clip_format=audio.clip_format,
        max_sample_rate=audio.max_sample_rate, skip_silence=audio.skip_silence,
        skip_silence_seconds=audio.skip_silence_seconds,
        silence_margin_seconds=audio.silence_margin_seconds,
        speech_above_floor_db=audio.speech_above_floor_db,
        overlap_seconds=audio.overlap_seconds, max_b64_chars=max_b64_chars)


def segments(chunks: list[ChunkResult]) -> list[Segment]:
    """Each chunk's share of the joined transcript with its source times (chunks in order)."""
    texts = joining.parts([c.text for c in chunks], [c.overlapped for c in chunks])
    out = []
    for c, text in zip(chunks, texts, strict=True):
        pieces = _after(c.sent, c.overlap_seconds)
        out.append(Segment(pieces[0][0], pieces[-1][1], text, pieces))
    return out


def _after(pieces: Pieces, seconds: float) -> Pieces:
    """``pieces`` less their first ``seconds`` of audio (the last instant is always kept)."""
    out: list[tuple[float, float]] = []
    for a, b in pieces:
        if seconds >= b - a:
            seconds -= b - a
            continue
        out.append((a + seconds, b))
        seconds = 0.0
    return tuple(out) or ((pieces[-1][1], pieces[-1][1]),)


def _name_clip(exc: ApiError | AudioError, index: int, start: float, end: float) -> Exception:
    """A copy of ``exc`` (same class and details) whose message names the clip."""
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = (f"clip {index} ({start:.1f}-{end:.1f} s): {exc}",)
    return new


class FileTranscriber:
    """Transcribes one file; the clip pool is bounded by the client's concurrency, and the
    clips are prepared through ``gate`` (shared by every file a process works on: the CPU's
    share, ``prepgate``; by default one of this transcriber's own)."""

    def __init__(self, client: MimoClient, audio: AudioSettings, *, language: str,
                 journal: Journal | None = None,
                 on_chunk: Callable[[ChunkResult], None] | None = None,
                 gate: PrepareGate | None = None) -> None:
        self.client = client
        self.params = audio_params(audio, client.api.max_request_b64_chars)
        self.language = language
        self.journal = journal
        self.on_chunk = on_chunk
        self.gate = gate or PrepareGate()

    def _stopping(self) -> bool:
        return bool(self.client.stopping)

    def run(self, source: Source, *, name: str | None = None, sha256: str | None = None,
            subtitles: bool = False) -> TranscriptResult:
        """The transcript of ``source``: a path, or an opened file (read through its
        descriptor, never reopened by name) shown as ``name`` in results and errors, whose
        ``sha256`` must then be given. ``subtitles`` aims clips at ``subtitle_clip_seconds``."""
        started = now_iso()
        if sha256 is None:
            if not isinstance(source, str | os.PathLike):
                raise ValueError("the sha256 of an opened file must be given")
            sha256 = sha256_file(Path(source))
        prepared = prepare(source, self.params, subtitles=subtitles, name=name)
        results = self._all_clips(prepared)
        results.sort(key=lambda c: (c.start, c.end))
        for i, c in enumerate(results):
            c.index = i
        summary = prepared.summary
        text = joining.join([c.text for c in results], [c.overlapped for c in results])
        reason = summary.no_speech
        if results and not text:
            reason = (f"no speech: the API heard none in {len(results)} clip(s) "
                      f"({sum(c.sent_seconds for c in results):.1f} s of audio)")
        return TranscriptResult(
            path=Path(prepared.info.name), sha256=sha256, info=prepared.info, text=text,
            language=self.language, model=self.client.api.model, chunks=results,
            started_at=started, finished_at=now_iso(),
            api_seconds=sum(c.api_seconds for c in results), usage=sum_usage(results),
            segments=segments(results), summary=summary, no_speech_reason=reason)

    def _all_clips(self, prepared: PreparedAudio) -> list[ChunkResult]:
        limit = max(1, self.client.api.max_concurrency)
        results: list[ChunkResult] = []
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="clip") as pool, \
                contextlib.closing(prepared.iter_clips()) as lazy:
            # Each clip is decoded and encoded (the generator's step) holding a CPU slot.
            clips = self.gate.each(lazy, self._stopping)
            pending: set[Future[list[ChunkResult]]] = set()

            def collect(done: set[Future[list[ChunkResult]]]) -> None:
                nonlocal first_error
                for fut in done:
                    try:
                        results.extend(fut.result())
                    except BaseException as exc:
                        if first_error is None:
                            first_error = exc

            for clip in clips:
                if first_error is None and self.client.stopping:
                    # Shutting down with clips unsent: fail the attempt (the job is retried)
                    # rather than return a transcript with those clips missing.
                    first_error = TransientApiError("stopped before every clip was sent")
                if first_error is not None:
                    break
                while len(pending) > limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
                # Each clip runs in the job's logging context (its lines name the file).
                pending.add(pool.submit(contextvars.copy_context().run, self._span, prepared,
                                        clip.index, clip, (clip.data, clip.mime),
                                        clip.overlap_before))
            done, _ = wait(pending)
            collect(done)
        if first_error is not None:
            raise first_error
        return results

    def _span(self, prepared: PreparedAudio, index: int, span: ClipSpan,
              encoded: tuple[bytes, str] | None, overlap: float) -> list[ChunkResult]:
        """The answer to ``span`` (its bytes and MIME type ``encoded``, or encoded now when
        None): from the journal, else paid (journaled first); a clip whose answer stopped short
        or looped is halved."""
        key, start, end = span.key, span.start, span.end
        journal = self.journal
        try:
            t = journaled(journal, key)
            from_journal = t is not None
            if t is None:
                if encoded is None:
                    with self.gate.slot(self._stopping):
                        encoded = prepared.encode(span), prepared.clip_mime
                data, mime = encoded
                record = (lambda r: journal.record(key, r)) if journal else None
                t = self.client.transcribe(data, mime, span.sent_seconds,
                                           language=self.language, on_response=record)
            why, detail = resplit_reason(t, span.sent_seconds)
            halve = why is not None and span.sent_seconds >= 2 * MIN_RESPLIT_SECONDS
            if why is not None and not halve and why != LOOPING:
                raise OutputTruncatedError(f"{detail}, and the audio is too short to split "
                                           "further", status=200, request_id=t.request_id)
        except (ApiError, AudioError) as exc:
            raise _name_clip(exc, index, start, end) from exc
        result = ChunkResult(index=index, start=start, end=end, text=t.text,
                             request_id=t.request_id, usage=t.usage,
                             attempts=0 if from_journal else t.attempts,
                             api_seconds=t.api_seconds, overlapped=overlap > 0,
                             from_journal=from_journal, pieces=span.pieces,
                             overlap_seconds=overlap)
        if why is not None and halve:
            return self._resplit(prepared, index, span, overlap, _discarded(result, why, detail))
        if why == LOOPING:
            # A loop our rule found in a span too short to halve: its text is kept, and the
            # clip says so (a false alarm of the rule must never fail a file).
            result.looping = detail
        if self.on_chunk:
            self.on_chunk(result)
        return [result]

    def _resplit(self, prepared: PreparedAudio, index: int, span: ClipSpan, overlap: float,
                 discarded: Discarded) -> list[ChunkResult]:
        """Halves a clip whose answer stopped short or looped, cutting where a left-out
        silence was, else in a pause near the middle, else with an overlap; the clips say why,
        and the first one keeps the discarded answer (it was paid)."""
        with self.gate.slot(self._stopping):
            first, second = prepared.split(span)
        head = self._span(prepared, index, first, None, overlap)
        tail = self._span(prepared, index, second, None, second.overlap_before)
        chunks = head + tail
        for c in chunks:
            c.resplit = (discarded.reason, *c.resplit)
        chunks[0].discarded = (discarded, *chunks[0].discarded)
        return chunks


def resplit_reason(t: Transcript, seconds: float) -> tuple[str | None, str]:
    """Whether the answer ``t`` to ``seconds`` of audio must be re-split, and why: it stopped
    short (finish_reason length, or repetition_truncation: the model's own loop guard,
    mimo-api.md s.2 and s.7), or its text loops (``looping.find_loop``). The same answer from
    the journal gives the same decision."""
    if t.truncated:
        return t.finish_reason, f"the answer stopped short (finish_reason {t.finish_reason})"
    loop = find_loop(t.text, seconds)
    return (LOOPING, loop.describe(seconds)) if loop else (None, "")


def journaled(journal: Journal | None, key: str) -> Transcript | None:
    """The journaled answer for ``key``, or None when there is none to use. An error body or a
    broken answer journaled by an earlier version was never a transcript: the span is sent
    again rather than the error replayed for ever."""
    raw = journal.lookup(key) if journal else None
    if raw is None or error_in_body(raw) is not None:
        return None
    try:
        return parse_completion(raw)
    except TransientApiError:
        return None


def _discarded(c: ChunkResult, reason: str, detail: str) -> Discarded:
    return Discarded(reason=reason, detail=detail, start=c.start, end=c.end,
                     request_id=c.request_id, usage=c.usage, attempts=c.attempts,
                     from_journal=c.from_journal)


class ClientTranscriber:
    """Transcribes whole files through one client: what the daemon gives each job."""

    def __init__(self, client: MimoClient, audio: AudioSettings,
                 gate: PrepareGate | None = None) -> None:
        self.client = client
        self.audio = audio
        self.gate = gate or PrepareGate()

    def transcribe(self, source: InputFile, *, sha256: str, language: str, journal: Journal,
                   on_chunk: Callable[[], None], subtitles: bool = False) -> TranscriptResult:
        """The transcript of ``source`` (read through its descriptor, never by its name), its
        paid answers kept in ``journal``; ``subtitles`` cuts clips for subtitle cues."""
        runner = FileTranscriber(self.client, self.audio, language=language, journal=journal,
                                 on_chunk=lambda _c: on_chunk(), gate=self.gate)
        return runner.run(source.fd, name=str(source.path), sha256=sha256, subtitles=subtitles)
