"""Sidecar files: ``NAME.txt`` (the transcript) and ``NAME.json`` (everything about it), and
``NAME.error.json`` for failures. Every write is atomic; nothing is overwritten unless asked.

What the files say is rendered by :mod:`mimo_watchd.records`; this module writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimo_watchd.fsutil import atomic_write

SIDECAR_SUFFIXES = (".txt", ".json")
ERROR_SUFFIX = ".error.json"


@dataclass(frozen=True)
class Sidecars:
    txt: Path
    json: Path


def write_sidecars(document: dict[str, Any], folder: Path, stem: str, *,
                   overwrite: bool = False) -> Sidecars:
    """Writes ``stem.txt`` then ``stem.json`` (the JSON last: its presence means complete)."""
    text = document["transcript"]
    txt = atomic_write(folder / f"{stem}.txt", text + "\n" if text else "", overwrite=overwrite)
    js = atomic_write(folder / f"{stem}.json", dumps(document), overwrite=overwrite)
    return Sidecars(txt=txt, json=js)


def dumps(document: dict[str, Any]) -> str:
    """The JSON text of a sidecar or error file."""
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
