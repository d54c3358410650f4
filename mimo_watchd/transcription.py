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
from mimo_watchd.client import MimoClient, parse_completion
from mimo_watchd.config import AudioSettings
from mimo_watchd.errors import ApiError, AudioError, OutputTruncatedError, TransientApiError
from mimo_watchd.fsutil import sha256_file
from mimo_watchd.inputs import InputFile
from mimo_watchd.timeline import Pieces, Segment
from mimo_watchd.timestamps import now_iso

USAGE_FIELDS = ("seconds", "prompt_tokens", "completion_tokens", "total_tokens", "audio_tokens")
MIN_RESPLIT_SECONDS = 4.0


class Journal(Protocol):
    """Where paid responses are kept, keyed by the audio span they answer."""

    def lookup(self, key: str) -> dict[str, Any] | None: ...

    def record(self, key: str, raw: dict[str, Any]) -> None: ...


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
    usage: dict[str, int] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)  # one per chunk, in order
    summary: AudioSummary | None = None  # what the audio layer measured (levels, lengths)
    no_speech_reason: str | None = None  # why the transcript is empty (None: it is not)

    @property
    def attempts(self) -> int:
        return max((c.attempts for c in self.chunks), default=0)

    @property
    def api_calls(self) -> int:
        return sum(c.attempts for c in self.chunks if not c.from_journal)

    @property
    def sent_seconds(self) -> float:
        """Seconds of audio in the requests this transcript was made from."""
        return sum(c.sent_seconds for c in self.chunks)


def flat_usage(usage: dict[str, Any]) -> dict[str, int]:
    """The usage fields we account for, with ``audio_tokens`` lifted out of its details."""
    out = {k: int(usage[k]) for k in USAGE_FIELDS if isinstance(usage.get(k), int | float)}
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("audio_tokens"), int | float):
        out["audio_tokens"] = int(details["audio_tokens"])
    return out


def sum_usage(chunks: list[ChunkResult]) -> dict[str, int]:
    total = dict.fromkeys(USAGE_FIELDS, 0)
    for c in chunks:
        for k, v in flat_usage(c.usage).items():
            total[k] += v
    return total


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
    """Transcribes one file; the clip pool is bounded by the client's concurrency."""

    def __init__(self, client: MimoClient, audio: AudioSettings, *, language: str,
                 journal: Journal | None = None,
                 on_chunk: Callable[[ChunkResult], None] | None = None) -> None:
        self.client = client
        self.params = audio_params(audio, client.api.max_request_b64_chars)
        self.language = language
        self.journal = journal
        self.on_chunk = on_chunk

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
                contextlib.closing(prepared.iter_clips()) as clips:
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
        None): from the journal, else paid (journaled first); a clip cut off by the output cap
        is halved."""
        key, start, end = span.key, span.start, span.end
        journal = self.journal
        try:
            raw = journal.lookup(key) if journal else None
            if raw is not None:
                t = parse_completion(raw)
            else:
                data, mime = encoded or (prepared.encode(span), prepared.clip_mime)
                record = (lambda r: journal.record(key, r)) if journal else None
                t = self.client.transcribe(data, mime, span.sent_seconds,
                                           language=self.language, on_response=record)
        except OutputTruncatedError as exc:
            if span.sent_seconds < 2 * MIN_RESPLIT_SECONDS:
                raise _name_clip(exc, index, start, end) from exc
            return self._resplit(prepared, index, span, overlap)
        except (ApiError, AudioError) as exc:
            raise _name_clip(exc, index, start, end) from exc
        result = ChunkResult(index=index, start=start, end=end, text=t.text,
                             request_id=t.request_id, usage=t.usage,
                             attempts=0 if raw is not None else t.attempts,
                             api_seconds=t.api_seconds, overlapped=overlap > 0,
                             from_journal=raw is not None, pieces=span.pieces,
                             overlap_seconds=overlap)
        if self.on_chunk:
            self.on_chunk(result)
        return [result]

    def _resplit(self, prepared: PreparedAudio, index: int, span: ClipSpan,
                 overlap: float) -> list[ChunkResult]:
        """Halves a clip whose transcript hit the output cap, cutting where a left-out
        silence was, else in a pause near the middle, else with an overlap."""
        first, second = prepared.split(span)
        head = self._span(prepared, index, first, None, overlap)
        tail = self._span(prepared, index, second, None, second.overlap_before)
        return head + tail


class ClientTranscriber:
    """Transcribes whole files through one client: what the daemon gives each job."""

    def __init__(self, client: MimoClient, audio: AudioSettings) -> None:
        self.client = client
        self.audio = audio

    def transcribe(self, source: InputFile, *, sha256: str, language: str, journal: Journal,
                   on_chunk: Callable[[], None], subtitles: bool = False) -> TranscriptResult:
        """The transcript of ``source`` (read through its descriptor, never by its name), its
        paid answers kept in ``journal``; ``subtitles`` cuts clips for subtitle cues."""
        runner = FileTranscriber(self.client, self.audio, language=language, journal=journal,
                                 on_chunk=lambda _c: on_chunk())
        return runner.run(source.fd, name=str(source.path), sha256=sha256, subtitles=subtitles)
