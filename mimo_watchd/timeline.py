"""A transcript's timeline: its text in segments placed in the recording's time, and their
JSON form in the sidecar (``segments``).

Kept apart from the pipeline (no audio or HTTP library behind it), so that rendering
subtitles from a stored document stays as light as writing the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Pieces = tuple[tuple[float, float], ...]
SCHEMA_1 = "mimo-watchd/transcript@1"  # 0.1's sidecars: no segments


@dataclass(frozen=True)
class Segment:
    """A clip's share of the transcript, in source time: ``text`` was said between ``start``
    and ``end``, in the source ranges ``pieces`` (more than one where a long silence inside
    was left out; an overlapped clip's repeated start belongs to the clip before it)."""

    start: float
    end: float
    text: str
    pieces: Pieces


def to_json(segment: Segment) -> dict[str, Any]:
    """A segment as the sidecar holds it."""
    return {"start": segment.start, "end": segment.end, "text": segment.text,
            "pieces": [list(p) for p in segment.pieces]}


def from_json(doc: Mapping[str, Any]) -> Segment:
    """The segment a sidecar holds."""
    return Segment(start=doc["start"], end=doc["end"], text=doc["text"],
                   pieces=tuple((a, b) for a, b in doc["pieces"]))


def of_document(document: Mapping[str, Any]) -> tuple[Segment, ...]:
    """The segments of a transcript sidecar document; for one of 0.1 (no segments), the whole
    text over the whole recording."""
    if document["schema"] != SCHEMA_1:
        return tuple(from_json(s) for s in document["segments"])
    whole = document["source"]["duration_seconds"]
    return (Segment(0.0, whole, document["transcript"], ((0.0, whole),)),)
