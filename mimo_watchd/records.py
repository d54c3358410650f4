"""What a job produced, as typed records, and everything rendered from them.

A job ends with one of three records: :class:`Transcribed` (done, or a duplicate that reuses
an earlier transcript), :class:`Skipped` (a duplicate moved without outputs) or
:class:`Failed`. Each renders, from the same fields:

- ``to_json()``: the JSON sidecar (``mimo-watchd/transcript@1``), the error file
  (``mimo-watchd/error@1``) or the skip note; also what the ledger stores and hooks receive;
- ``log_fields()``: the outcome's part of the canonical ``job.done``/``job.failed`` line;
- ``outcome``: the outcome label of logs, metrics, hooks and the ledger.

``from_json`` reads back what ``to_json`` wrote (also what earlier versions stored), so a
resumed or reused result renders byte for byte as it was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mimo_watchd import __version__
from mimo_watchd.billing import Cost, Price
from mimo_watchd.errors import ApiError, MimoWatchdError
from mimo_watchd.timestamps import iso_seconds
from mimo_watchd.transcription import USAGE_FIELDS, ChunkResult, TranscriptResult, flat_usage

SCHEMA = "mimo-watchd/transcript@1"
ERROR_SCHEMA = "mimo-watchd/error@1"
TOOL = "mimo-watchd"


@dataclass(frozen=True)
class Source:
    """The recording a transcript is of, and where it is now."""

    path: str
    original_path: str
    sha256: str
    bytes: int
    format: str
    codec: str | None
    duration_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "original_path": self.original_path, "sha256": self.sha256,
                "bytes": self.bytes, "format": self.format, "codec": self.codec,
                "duration_seconds": self.duration_seconds}


@dataclass(frozen=True)
class Usage:
    """What the API reported it billed, summed over a file's chunks."""

    seconds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    audio_tokens: int = 0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Usage:
        return cls(**{k: int(doc.get(k) or 0) for k in USAGE_FIELDS})

    def to_json(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in USAGE_FIELDS}


@dataclass(frozen=True)
class Chunk:
    """One request's worth of a file's audio and what answered it."""

    index: int
    start: float
    end: float
    request_id: str | None
    usage: Mapping[str, int]  # the usage fields the response had
    attempts: int  # HTTP requests made for it (0: answered from the journal)
    from_journal: bool

    @classmethod
    def from_result(cls, c: ChunkResult) -> Chunk:
        return cls(index=c.index, start=round(c.start, 3), end=round(c.end, 3),
                   request_id=c.request_id, usage=flat_usage(c.usage), attempts=c.attempts,
                   from_journal=c.from_journal)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Chunk:
        return cls(index=doc["index"], start=doc["start"], end=doc["end"],
                   request_id=doc["request_id"], usage=dict(doc["usage"]),
                   attempts=doc["attempts"], from_journal=doc["from_journal"])

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "start": self.start, "end": self.end,
                "request_id": self.request_id, "usage": dict(self.usage),
                "attempts": self.attempts, "from_journal": self.from_journal}


@dataclass(frozen=True)
class Timing:
    arrived_at: str | None
    started_at: str
    finished_at: str
    api_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"arrived_at": self.arrived_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "api_seconds": self.api_seconds}


@dataclass(frozen=True)
class Transcribed:
    """A transcript of a recording; with ``duplicate_of``, one reused from an earlier file."""

    source: Source
    text: str
    language: str
    model: str
    usage: Usage
    chunks: tuple[Chunk, ...]
    timing: Timing
    tool_version: str = __version__
    duplicate_of: str | None = None  # where the recording it was first made for is now
    cost: Cost | None = None  # None: made before costs were kept, or without a price

    @classmethod
    def from_result(cls, result: TranscriptResult, *, path: str, original_path: str,
                    arrived_at: str | None = None, price: Price | None = None) -> Transcribed:
        """The record of a file just transcribed (``path``: where its audio is, or goes);
        with ``price``, what its answers cost."""
        info = result.info
        return cls(
            source=Source(path=path, original_path=original_path, sha256=result.sha256,
                          bytes=info.size, format=info.format, codec=info.codec,
                          duration_seconds=round(info.duration_seconds, 3)),
            text=result.text, language=result.language, model=result.model,
            usage=Usage.from_json(result.usage),
            chunks=tuple(Chunk.from_result(c) for c in result.chunks),
            timing=Timing(arrived_at=arrived_at, started_at=result.started_at,
                          finished_at=result.finished_at,
                          api_seconds=round(result.api_seconds, 3)),
            cost=Cost.of([c.usage for c in result.chunks], price) if price else None)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Transcribed:
        src, timing, tool = doc["source"], doc["timing"], doc["tool"]
        return cls(
            source=Source(**src), text=doc["transcript"], language=doc["language"],
            model=doc["model"], usage=Usage.from_json(doc["usage"]),
            chunks=tuple(Chunk.from_json(c) for c in doc["chunks"]),
            timing=Timing(**timing), tool_version=tool["version"],
            duplicate_of=doc.get("duplicate_of"),
            cost=Cost.from_json(doc["cost"]) if doc.get("cost") else None)

    @property
    def outcome(self) -> str:
        return "done" if self.duplicate_of is None else "duplicate"

    @property
    def no_speech(self) -> bool:
        return self.text == ""

    def reused(self, *, path: str, original_path: str, arrived_at: str | None,
               price: Price | None = None) -> Transcribed:
        """This transcript for another file of the same content (a duplicate of this one,
        which cost nothing)."""
        return replace(self.placed(path=path, original_path=original_path,
                                   arrived_at=arrived_at), duplicate_of=self.source.path,
                       cost=Cost.nothing(price) if price else None)

    def placed(self, *, path: str, original_path: str, arrived_at: str | None) -> Transcribed:
        """This record for a file that arrived at ``original_path`` and goes to ``path``."""
        return replace(self, source=replace(self.source, path=path, original_path=original_path),
                       timing=replace(self.timing, arrived_at=arrived_at))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "source": self.source.to_json(),
            "transcript": self.text,
            "no_speech": self.no_speech,
            "language": self.language,
            "model": self.model,
            "usage": self.usage.to_json(),
            "chunks": [c.to_json() for c in self.chunks],
            "timing": self.timing.to_json(),
            "tool": {"name": TOOL, "version": self.tool_version},
        }
        if self.duplicate_of is not None:
            doc["duplicate_of"] = self.duplicate_of
        if self.cost is not None:
            doc["cost"] = self.cost.to_json()
        return doc

    def log_fields(self) -> dict[str, Any]:
        """A duplicate paid nothing: its line says 0 and names the file it reuses."""
        cost = ({"cost": self.cost.amount, "currency": self.cost.currency}
                if self.cost is not None else {})
        if self.duplicate_of is not None:
            return {"audio_seconds": self.source.duration_seconds, "billed_seconds": 0,
                    "tokens": 0, "chunks": len(self.chunks), "api_calls": 0,
                    "duplicate_of": self.duplicate_of, **cost}
        return {"audio_seconds": self.source.duration_seconds,
                "billed_seconds": self.usage.seconds, "tokens": self.usage.total_tokens,
                "chunks": len(self.chunks), "api_calls": sum(c.attempts for c in self.chunks),
                **cost}


@dataclass(frozen=True)
class Skipped:
    """A duplicate moved to processed without outputs (``on_duplicate: skip``)."""

    duplicate_of: str | None

    outcome = "skipped"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Skipped:
        return cls(duplicate_of=doc.get("duplicate_of"))

    def to_json(self) -> dict[str, Any]:
        return {"duplicate_of": self.duplicate_of}

    def log_fields(self) -> dict[str, Any]:
        return {"audio_seconds": None, "billed_seconds": 0, "tokens": 0, "chunks": 0,
                "api_calls": 0, "duplicate_of": self.duplicate_of}


@dataclass(frozen=True)
class Failed:
    """Why a file went to failed_dir: what ``NAME.error.json`` says."""

    path: str  # where the audio is, or goes
    original_path: str
    sha256: str | None
    reason: str
    error: str  # the error's class name
    http_status: int | None
    api_error: Any  # the API's error body, as received
    request_id: str | None
    attempts: int
    failed_at: str
    tool_version: str = __version__

    outcome = "failed"

    @classmethod
    def from_error(cls, exc: MimoWatchdError, *, path: str, original_path: str, attempts: int,
                   sha256: str | None = None) -> Failed:
        api = exc if isinstance(exc, ApiError) else None
        return cls(path=path, original_path=original_path, sha256=sha256, reason=exc.reason,
                   error=type(exc).__name__, http_status=api.status if api else None,
                   api_error=api.body if api else None,
                   request_id=api.request_id if api else None, attempts=attempts,
                   failed_at=iso_seconds())

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Failed:
        src = doc["source"]
        return cls(path=src["path"], original_path=src["original_path"], sha256=src["sha256"],
                   reason=doc["reason"], error=doc["error"], http_status=doc["http_status"],
                   api_error=doc["api_error"], request_id=doc["request_id"],
                   attempts=doc["attempts"], failed_at=doc["failed_at"],
                   tool_version=doc["tool"]["version"])

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": ERROR_SCHEMA,
            "source": {"path": self.path, "original_path": self.original_path,
                       "sha256": self.sha256},
            "reason": self.reason,
            "error": self.error,
            "http_status": self.http_status,
            "api_error": self.api_error,
            "request_id": self.request_id,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "tool": {"name": TOOL, "version": self.tool_version},
        }

    def log_fields(self) -> dict[str, Any]:
        return {"audio_seconds": None, "billed_seconds": None, "tokens": None, "chunks": 0,
                "api_calls": 0, "reason": self.reason}


Record = Transcribed | Skipped | Failed


def moved_to(record: Record, path: str) -> Record:
    """``record`` for its audio at ``path`` (the name placement settled on)."""
    if isinstance(record, Transcribed):
        return replace(record, source=replace(record.source, path=path))
    if isinstance(record, Failed):
        return replace(record, path=path)
    return record


def from_json(kind: str, doc: Mapping[str, Any]) -> Record:
    """The record a plan of ``kind`` (done, skipped, failed) stored as ``doc``."""
    if kind == "failed":
        return Failed.from_json(doc)
    if kind == "skipped":
        return Skipped.from_json(doc)
    return Transcribed.from_json(doc)
