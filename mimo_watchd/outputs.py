"""Sidecar files: ``NAME.txt`` (the transcript), ``NAME.srt`` and ``NAME.vtt`` (subtitles) and
``NAME.json`` (everything about it), as a watch's ``formats`` ask, and ``NAME.error.json`` for
failures: which files a job writes and their bytes.

What the files say is rendered by :mod:`mimo_watchd.records` (the subtitles by
:mod:`mimo_watchd.subtitles`, from the document's segments); this module turns a document into
the set of files (``sidecar_files``), in the order they are written (the JSON last: its
presence means the set is complete). Whatever the set holds, ``placement`` writes it with
no-overwrite primitives under one stem, and ``transcribe`` the same way. The names a done set
may take (``suffixes``) are all four, whichever the watch writes, so that one stem never holds
the sidecars of two recordings.

Paths are ``str`` holding the file system's bytes (``surrogateescape``); a name that is not
UTF-8 (``b'\\xff.wav'``) is kept exactly in the JSON as the escapes ``\\udcff``, which
``json.loads`` (and ``os.fsencode``) turn back into the same bytes (``dumps``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mimo_watchd import subtitles, timeline
from mimo_watchd.fsutil import atomic_write

ERROR_SUFFIX = ".error.json"
DEFAULT_FORMATS = ("txt", "json")
_DONE_ORDER = ("txt", "srt", "vtt", "json")  # write order: the JSON last
_SUFFIXES = {"done": tuple(f".{f}" for f in _DONE_ORDER), "failed": (ERROR_SUFFIX,),
             "skipped": ()}
_SURROGATE = re.compile("[\ud800-\udfff]")


def suffixes(kind: str) -> tuple[str, ...]:
    """The suffixes of the files a plan of ``kind`` (done, failed, skipped) writes."""
    return _SUFFIXES[kind]


def sidecar_files(kind: str, document: dict[str, Any],
                  formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[tuple[str, bytes]]:
    """The files (suffix, bytes) a plan of ``kind`` writes for ``document``, in write order;
    a done set holds the ``formats`` asked for."""
    if kind == "done":
        return [(f".{f}", _render(f, document)) for f in _DONE_ORDER if f in formats]
    if kind == "failed":
        return [(ERROR_SUFFIX, dumps(document).encode("utf-8"))]
    return []


def _render(fmt: str, document: dict[str, Any]) -> bytes:
    """The bytes of a done set's ``fmt`` file."""
    if fmt == "txt":
        text = document["transcript"]
        return encode_text(text + "\n" if text else "")
    if fmt == "json":
        return dumps(document).encode("utf-8")
    cues = subtitles.cues(timeline.of_document(document))
    return encode_text(subtitles.srt(cues) if fmt == "srt" else subtitles.vtt(cues))


def key(suffix: str) -> str:
    """A sidecar's name in hook paths and variables: ".txt" -> "txt", ".error.json" ->
    "error_json"."""
    return suffix.lstrip(".").replace(".", "_")


def write_sidecars(document: dict[str, Any], folder: Path, stem: str, *,
                   formats: tuple[str, ...] = DEFAULT_FORMATS,
                   overwrite: bool = False) -> dict[str, Path]:
    """Writes the done set of ``document`` (its ``formats``) as ``folder/stem.*``; with
    ``overwrite`` False a file that exists raises FileExistsError naming it, and the files
    written before it in this call are removed again (never half a set)."""
    written: dict[str, Path] = {}
    try:
        for suffix, data in sidecar_files("done", document, formats):
            written[key(suffix)] = atomic_write(folder / f"{stem}{suffix}", data,
                                                overwrite=overwrite)
    except FileExistsError:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return written


def dumps(document: Any, *, indent: int | None = 2) -> str:
    """The JSON text (and a newline) of a sidecar, an error file or a status: UTF-8 text,
    except that characters standing for bytes that are not UTF-8 (``surrogateescape``) are
    written as ``\\uXXXX`` escapes, so the text always encodes and the bytes come back on
    reading. ``indent=None``: one line."""
    text = json.dumps(document, ensure_ascii=False, indent=indent) + "\n"
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def encode_text(text: str) -> bytes:
    """``text`` as UTF-8; bytes that were not UTF-8 in a name go back as those bytes."""
    return text.encode("utf-8", "surrogateescape")
