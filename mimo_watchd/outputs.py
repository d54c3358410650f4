"""Sidecar files: ``NAME.txt`` (the transcript) and ``NAME.json`` (everything about it), and
``NAME.error.json`` for failures. Every write is atomic; nothing is overwritten unless asked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimo_watchd import __version__
from mimo_watchd.errors import ApiError, MimoWatchdError
from mimo_watchd.fsutil import atomic_write
from mimo_watchd.timestamps import iso_seconds

SCHEMA = "mimo-watchd/transcript@1"
ERROR_SCHEMA = "mimo-watchd/error@1"
SIDECAR_SUFFIXES = (".txt", ".json")
ERROR_SUFFIX = ".error.json"


@dataclass(frozen=True)
class Sidecars:
    txt: Path
    json: Path


def transcript_document(result: Any, *, source_path: Path, original_path: Path,
                        arrived_at: str | None = None) -> dict[str, Any]:
    """The versioned JSON sidecar for a ``transcription.TranscriptResult``."""
    info = result.info
    return {
        "schema": SCHEMA,
        "source": {
            "path": str(source_path),
            "original_path": str(original_path),
            "sha256": result.sha256,
            "bytes": info.size,
            "format": info.format,
            "codec": info.codec,
            "duration_seconds": round(info.duration_seconds, 3),
        },
        "transcript": result.text,
        "no_speech": result.text == "",
        "language": result.language,
        "model": result.model,
        "usage": result.usage,
        "chunks": [c.to_json() for c in result.chunks],
        "timing": {
            "arrived_at": arrived_at,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "api_seconds": round(result.api_seconds, 3),
        },
        "tool": {"name": "mimo-watchd", "version": __version__},
    }


def write_sidecars(document: dict[str, Any], folder: Path, stem: str, *,
                   overwrite: bool = False) -> Sidecars:
    """Writes ``stem.txt`` then ``stem.json`` (the JSON last: its presence means complete)."""
    text = document["transcript"]
    txt = atomic_write(folder / f"{stem}.txt", text + "\n" if text else "", overwrite=overwrite)
    js = atomic_write(folder / f"{stem}.json", dumps(document), overwrite=overwrite)
    return Sidecars(txt=txt, json=js)


def error_document(exc: BaseException, *, source_path: Path, original_path: Path,
                   attempts: int, sha256: str | None = None) -> dict[str, Any]:
    """What ``NAME.error.json`` says: what failed, the HTTP status, the API's body, when."""
    doc: dict[str, Any] = {
        "schema": ERROR_SCHEMA,
        "source": {"path": str(source_path), "original_path": str(original_path),
                   "sha256": sha256},
        "reason": exc.reason if isinstance(exc, MimoWatchdError) else f"{type(exc).__name__}: "
                                                                      f"{exc}",
        "error": type(exc).__name__,
        "http_status": None,
        "api_error": None,
        "request_id": None,
        "attempts": attempts,
        "failed_at": iso_seconds(),
        "tool": {"name": "mimo-watchd", "version": __version__},
    }
    if isinstance(exc, ApiError):
        doc.update(http_status=exc.status, api_error=exc.body, request_id=exc.request_id)
    return doc


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
