"""One file's transcript: prepare the audio, transcribe its chunks in parallel, join the text.

Used by both ``mimo-watchd transcribe`` and the daemon. Chunks are pulled lazily from the
audio layer (bounded memory) and sent concurrently within the client's shared limits. Each
chunk's paid response goes to the ``Journal`` before it is interpreted; a chunk already in the
journal is never sent again, so a retry or a restart re-sends only what is missing.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from mimo_watchd import joining
from mimo_watchd.audio import AudioInfo, AudioParams, ClipSpan, prepare
from mimo_watchd.client import MimoClient, Transcript, parse_completion
from mimo_watchd.config import AudioSettings
from mimo_watchd.errors import ApiError, AudioError, OutputTruncatedError, TransientApiError
from mimo_watchd.fsutil import sha256_file
from mimo_watchd.inputs import InputFile
from mimo_watchd.timestamps import now_iso

USAGE_FIELDS = ("seconds", "prompt_tokens", "completion_tokens", "total_tokens", "audio_tokens")
MIN_RESPLIT_SECONDS = 4.0


class Journal(Protocol):
    """Where paid responses are kept, keyed by the audio span they answer."""

    def lookup(self, key: str) -> dict[str, Any] | None: ...

    def record(self, key: str, raw: dict[str, Any]) -> None: ...


@dataclass
class ChunkResult:
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

    @property
    def attempts(self) -> int:
        return max((c.attempts for c in self.chunks), default=0)

    @property
    def api_calls(self) -> int:
        return sum(c.attempts for c in self.chunks if not c.from_journal)


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
    """The audio layer's parameters from the configuration (the new ones keep their defaults)."""
    return AudioParams(max_clip_seconds=audio.max_chunk_seconds, clip_format=audio.chunk_format,
                       overlap_seconds=audio.overlap_seconds, max_b64_chars=max_b64_chars)


def _name_chunk(exc: ApiError | AudioError, index: int, start: float, end: float) -> Exception:
    return _reworded(exc, f"chunk {index} ({start:.1f}-{end:.1f} s): " + str(exc))


def _renamed(exc: ApiError | AudioError, path: str, name: str) -> Exception:
    """``exc`` with ``path`` (a descriptor's path) replaced by ``name`` in its message."""
    return _reworded(exc, str(exc).replace(path, name))


def _reworded(exc: ApiError | AudioError, message: str) -> Exception:
    """A copy of ``exc`` (same class and details) saying ``message``."""
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = (message,)
    return new


class FileTranscriber:
    """Transcribes one prepared file; the chunk pool is bounded by the client's concurrency."""

    def __init__(self, client: MimoClient, audio: AudioSettings, *, language: str,
                 journal: Journal | None = None,
                 on_chunk: Callable[[ChunkResult], None] | None = None) -> None:
        self.client = client
        self.audio = audio
        self.language = language
        self.journal = journal
        self.on_chunk = on_chunk
        self._lock = threading.Lock()

    def run(self, path: Path, *, sha256: str | None = None,
            name: Path | None = None) -> TranscriptResult:
        """The transcript of the file at ``path``; ``name`` is where it lies when ``path`` is
        another way to it (``/proc/self/fd/N``): results and errors name ``name``."""
        if name is not None and name != path:
            try:
                return replace(self.run(path, sha256=sha256), path=name)
            except (ApiError, AudioError) as exc:
                raise _renamed(exc, str(path), str(name)) from exc
        started = now_iso()
        digest = sha256 or sha256_file(path)
        prepared = prepare(path, audio_params(self.audio, self.client.api.max_request_b64_chars))
        results = self._all_chunks(prepared)
        results.sort(key=lambda c: (c.start, c.end))
        for i, c in enumerate(results):
            c.index = i
        text = joining.join([c.text for c in results], [c.overlapped for c in results])
        return TranscriptResult(
            path=path, sha256=digest, info=prepared.info, text=text, language=self.language,
            model=self.client.api.model, chunks=results, started_at=started,
            finished_at=now_iso(), api_seconds=sum(c.api_seconds for c in results),
            usage=sum_usage(results))

    def _all_chunks(self, prepared: Any) -> list[ChunkResult]:
        limit = max(1, self.client.api.max_concurrency)
        results: list[ChunkResult] = []
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="chunk") as pool:
            pending: set[Future[list[ChunkResult]]] = set()

            def collect(done: set[Future[list[ChunkResult]]]) -> None:
                nonlocal first_error
                for fut in done:
                    try:
                        results.extend(fut.result())
                    except BaseException as exc:
                        if first_error is None:
                            first_error = exc

            for chunk in prepared.iter_clips():
                if first_error is None and self.client.stopping:
                    # Shutting down with chunks unsent: fail the attempt (the job is retried)
                    # rather than return a transcript with those chunks missing.
                    first_error = TransientApiError("stopped before every chunk was sent")
                if first_error is not None:
                    break
                while len(pending) > limit:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
                # Each chunk runs in the job's logging context (its lines name the file).
                pending.add(pool.submit(contextvars.copy_context().run, self._chunk, prepared,
                                        chunk))
            done, _ = wait(pending)
            collect(done)
        if first_error is not None:
            raise first_error
        return results

    def _chunk(self, prepared: Any, chunk: Any) -> list[ChunkResult]:
        return self._span(prepared, chunk.index, chunk, chunk.data, chunk.mime,
                          overlapped=chunk.overlap_before > 0)

    def _span(self, prepared: Any, index: int, span: ClipSpan, data: bytes | None,
              mime: str | None, *, overlapped: bool) -> list[ChunkResult]:
        key, start, end = span.key, span.start, span.end
        journal = self.journal
        try:
            raw = journal.lookup(key) if journal else None
            if raw is not None:
                t = parse_completion(raw)
                result = self._result(index, start, end, t, overlapped, from_journal=True)
            else:
                if data is None:
                    data, mime = _encoded(prepared.encode(span), prepared)
                record = (lambda r: journal.record(key, r)) if journal else None
                t = self.client.transcribe(data, mime or "audio/mpeg", span.sent_seconds,
                                           language=self.language, on_response=record)
                result = self._result(index, start, end, t, overlapped, from_journal=False)
        except OutputTruncatedError as exc:
            if span.sent_seconds < 2 * MIN_RESPLIT_SECONDS:
                raise _name_chunk(exc, index, start, end) from exc
            return self._resplit(prepared, index, span, overlapped)
        except (ApiError, AudioError) as exc:
            raise _name_chunk(exc, index, start, end) from exc
        if self.on_chunk:
            self.on_chunk(result)
        return [result]

    def _resplit(self, prepared: Any, index: int, span: ClipSpan,
                 overlapped: bool) -> list[ChunkResult]:
        """Halves a span whose transcript hit the output cap, cutting in a pause near the middle
        (or with an overlap where there is none)."""
        first, second = prepared.split(span)
        head = self._span(prepared, index, first, None, None, overlapped=overlapped)
        tail = self._span(prepared, index, second, None, None,
                          overlapped=second.overlap_before > 0)
        return head + tail

    def _result(self, index: int, start: float, end: float, t: Transcript, overlapped: bool,
                *, from_journal: bool) -> ChunkResult:
        return ChunkResult(index=index, start=start, end=end, text=t.text,
                           request_id=t.request_id, usage=t.usage,
                           attempts=0 if from_journal else t.attempts,
                           api_seconds=t.api_seconds, overlapped=overlapped,
                           from_journal=from_journal)


def _encoded(value: Any, prepared: Any) -> tuple[bytes, str]:
    return bytes(value), prepared.clip_mime


class ClientTranscriber:
    """Transcribes whole files through one client: what the daemon gives each job."""

    def __init__(self, client: MimoClient, audio: AudioSettings) -> None:
        self.client = client
        self.audio = audio

    def transcribe(self, source: InputFile, *, sha256: str, language: str, journal: Journal,
                   on_chunk: Callable[[], None]) -> TranscriptResult:
        """The transcript of ``source`` (read through its descriptor, never by its name: the
        audio layer opens ``/proc/self/fd/N``), its paid answers kept in ``journal``."""
        runner = FileTranscriber(self.client, self.audio, language=language, journal=journal,
                                 on_chunk=lambda _c: on_chunk())
        return runner.run(source.reader, sha256=sha256, name=source.path)
