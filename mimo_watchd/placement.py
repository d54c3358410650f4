"""Where a finished or failed file goes, and getting it there (resumably) without losing it.

A ``Plan`` is chosen once, recorded in the ledger, then carried out; carrying it out again
after a crash converges on the same end state: sidecars (or error file) written under the
planned stem, the audio at its planned destination, the inbox copy gone.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mimo_watchd import crashpoints, fsutil
from mimo_watchd.config import WatchSettings
from mimo_watchd.errors import JobError
from mimo_watchd.fsutil import atomic_write, safe_move, sha256_file
from mimo_watchd.outputs import ERROR_SUFFIX, SIDECAR_SUFFIXES, dumps, write_sidecars
from mimo_watchd.paths import relative_to


@dataclass(frozen=True)
class Plan:
    kind: str  # "done" | "failed" | "skipped"
    source: str
    audio_dest: str
    sidecar_dir: str
    stem: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(**d)

    @property
    def sidecar_paths(self) -> dict[str, str]:
        folder = Path(self.sidecar_dir)
        if self.kind == "failed":
            return {"error_json": str(folder / f"{self.stem}{ERROR_SUFFIX}")}
        if self.kind == "skipped":
            return {}
        return {"txt": str(folder / f"{self.stem}.txt"), "json": str(folder / f"{self.stem}.json")}


def relative_parent(watch: WatchSettings, source: Path) -> Path:
    """The sub-folder of ``source`` below the watch root ('.' for files at the top)."""
    rel = relative_to(os.path.abspath(watch.path), os.path.abspath(source))
    if not rel:
        raise JobError(f"{source} is not inside the watched folder {watch.path}")
    return Path(rel).parent


def choose(watch: WatchSettings, source: Path, kind: str) -> Plan:
    """A destination under which neither the audio nor its sidecars exist yet."""
    rel = relative_parent(watch, source)
    suffixes: tuple[str, ...]
    if kind == "failed":
        audio_dir = watch.failed_dir / rel
        side_dir, suffixes = audio_dir, (ERROR_SUFFIX,)
    else:
        audio_dir = watch.processed_dir / rel
        side_dir = (watch.output_dir / rel) if watch.output_dir else audio_dir
        suffixes = SIDECAR_SUFFIXES if kind == "done" else ()
    name = source.name
    stem, ext = (source.stem, source.suffix) if source.suffix else (name, "")
    longest = max((len(x.encode()) for x in suffixes), default=0)
    n = 0
    while True:
        # The audio keeps its full name when it fits; only sidecar stems are shortened to
        # leave room for ".error.json" within NAME_MAX.
        tag = "" if n == 0 else f"-{n}"
        audio_name = _fit(stem, len(ext.encode()) + len(tag)) + tag + ext
        side_stem = _fit(stem, longest + len(tag)) + tag
        taken = _exists(audio_dir / audio_name) or any(
            _exists(side_dir / (side_stem + sfx)) for sfx in suffixes)
        if not taken:
            return Plan(kind=kind, source=str(source), audio_dest=str(audio_dir / audio_name),
                        sidecar_dir=str(side_dir), stem=side_stem)
        n += 1


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _fit(stem: str, reserve: int, limit: int = 255) -> str:
    """``stem`` cut (at a character boundary) so that ``reserve`` more bytes fit NAME_MAX."""
    encoded = stem.encode("utf-8")
    budget = limit - reserve
    if len(encoded) <= budget:
        return stem
    return encoded[:budget].decode("utf-8", errors="ignore")


def remove_stale_temps(plan: Plan, *, older_than: float) -> int:
    """Deletes temp files a killed process left in the plan's sidecar and audio folders."""
    folders = {Path(plan.sidecar_dir), Path(plan.audio_dest).parent}
    return sum(fsutil.remove_stale_temps(f, older_than=older_than) for f in folders)


def carry_out(plan: Plan, document: dict[str, Any]) -> Path | None:
    """Writes the plan's sidecars, then moves the audio; safe to repeat after a crash.

    Returns where the audio is now, or None when it had vanished from the inbox before
    it could be moved (the sidecars are still written).
    """
    folder = Path(plan.sidecar_dir)
    if plan.kind == "done":
        write_sidecars(document, folder, plan.stem, overwrite=True)
        crashpoints.reached("sidecars")
    elif plan.kind == "failed":
        atomic_write(folder / f"{plan.stem}{ERROR_SUFFIX}", dumps(document), overwrite=True)
    return move_audio(Path(plan.source), Path(plan.audio_dest))


def move_audio(source: Path, dest: Path) -> Path | None:
    """Moves the inbox file to ``dest``, finishing a move a crash interrupted."""
    src_exists = source.exists() or source.is_symlink()
    if dest.exists():
        if not src_exists:
            return dest  # moved before the crash
        if _same(source, dest):
            source.unlink()  # the crash fell between link and unlink
            return dest
        raise JobError(f"cannot move {source}: {dest} exists and is another file")
    if not src_exists:
        return None
    with contextlib.suppress(FileNotFoundError):
        return safe_move(source, dest)
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    if sa.st_size != sb.st_size:
        return False
    return sha256_file(a) == sha256_file(b)
