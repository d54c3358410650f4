"""Retention: deleting what was kept long enough from the processed and failed folders (GDPR).

A watch's ``retention`` says after how many days audio leaves ``processed_dir``
(``processed_days``) and ``failed_dir`` (``failed_days``), and whether the sidecars stay
(``keep: [sidecars]``, the default) or go with it. What may be deleted is decided from the
ledger, one job's set at a time, never by walking folders:

- only the files of a job the ledger holds as DONE or FAILED, where it put them (its final
  path and its plan's sidecars), inside that watch's own output folders; a file the ledger
  does not know, or one a queued or running job plans to write, is never touched;
- a set's age is the time since its newest file was modified: the sidecars are written when
  the file is processed, so a recording whose own date is years old is not deleted the day it
  is transcribed (a skipped duplicate, which has no sidecars, counts from its job's end);
- a file is deleted through its folder opened below the output folder without following any
  symlink (``inputs.open_dir``), and only while its name still names the very file that was
  judged (``fsutil.remove_name``): what was swapped in meanwhile stays.

The daemon prunes at start, every ``INTERVAL`` seconds and after a reload; ``mimo-watchd
prune [--dry-run]`` does it on demand. Each file is logged and counted.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from mimo_watchd import fsutil, outputs
from mimo_watchd.config import WatchSettings
from mimo_watchd.inputs import Identity, open_dir
from mimo_watchd.ledger import Job, Ledger, State
from mimo_watchd.paths import relative_to

log = structlog.get_logger("mimo_watchd.retention")

# An hour: retention counts in days, so an hour late is within its precision, and reading
# the ledger's finished jobs once an hour costs nothing worth mentioning.
INTERVAL = 3600.0
DAY = 86400.0
_PLACED = frozenset({"done", "duplicate", "skipped", "failed"})


@dataclass(frozen=True)
class Expired:
    """A file whose time is up: where, in which output folder, what it is, how old its set."""

    path: Path
    root: Path
    kind: str  # "audio" | "sidecar"
    watch: str
    age_days: float
    identity: Identity  # the file judged: only this file is deleted


@dataclass(frozen=True)
class Pruned:
    """What became of an expired file: deleted, or why not (``error``)."""

    file: Expired
    deleted: bool
    error: str | None = None


def _active_paths(ledger: Ledger) -> set[str]:
    """Every path a queued or running job names or plans to write."""
    found: set[str] = set()
    for state in (State.QUEUED, State.PROCESSING):
        for job in ledger.jobs(state):
            found.add(job.path)
            plan = job.plan or {}
            for key in ("audio_dest", "moved_from"):
                if plan.get(key):
                    found.add(plan[key])
            if plan.get("sidecar_dir") is not None:
                found.update(os.path.join(plan["sidecar_dir"], plan["stem"] + s)
                             for s in outputs.suffixes(plan["kind"]))
    return found


def _stat(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _set_of(job: Job, watch: WatchSettings) -> tuple[float | None, list[tuple[Path, Path, str]]]:
    """The job's retention period in days (None: kept for ever) and its files: (path, output
    folder, kind), those outside the watch's output folders left out."""
    plan = job.plan or {}
    retention = watch.retention
    if retention is None or job.final_path is None or plan.get("sidecar_dir") is None:
        return None, []
    failed = plan["kind"] == "failed"
    keep_days = retention.failed_days if failed else retention.processed_days
    audio_root = watch.failed_dir if failed else watch.processed_dir
    side_root = watch.failed_dir if failed else (watch.output_dir or watch.processed_dir)
    files = [(Path(job.final_path), audio_root, "audio")]
    files += [(Path(plan["sidecar_dir"]) / f"{plan['stem']}{s}", side_root, "sidecar")
              for s in outputs.suffixes(plan["kind"])]
    return keep_days, [(p, r, k) for p, r, k in files if relative_to(r, p)]


def expired(watches: Sequence[WatchSettings], ledger: Ledger,
            now: float | None = None) -> list[Expired]:
    """The files of finished jobs whose retention period is over, oldest sets first."""
    now = time.time() if now is None else now
    by_watch = {str(w.path): w for w in watches if w.retention is not None}
    if not by_watch:
        return []
    active = _active_paths(ledger)
    found: dict[Path, Expired] = {}
    for state in (State.DONE, State.FAILED):
        for job in ledger.jobs(state):
            watch = by_watch.get(job.watch)
            if watch is None or job.outcome not in _PLACED:
                continue
            found.update((e.path, e) for e in _expired_in(job, watch, active, now))
    return sorted(found.values(), key=lambda e: (-e.age_days, str(e.path)))


def _expired_in(job: Job, watch: WatchSettings, active: set[str],
                now: float) -> Iterator[Expired]:
    keep_days, files = _set_of(job, watch)
    if keep_days is None or not files:
        return
    stats = [(p, r, k, st) for p, r, k in files if (st := _stat(p)) is not None]
    if not stats:
        return
    newest = max(st.st_mtime for *_, st in stats)
    if not any(k == "sidecar" for *_, k, _ in stats):
        newest = max(newest, job.updated_at)  # no file of ours says when it was processed
    age = now - newest
    if age < keep_days * DAY:
        return
    assert watch.retention is not None
    keep_sidecars = "sidecars" in watch.retention.keep
    for path, root, kind, st in stats:
        if str(path) in active or (kind == "sidecar" and keep_sidecars):
            continue
        if kind == "audio" and st.st_size != job.size:
            continue  # another file took the name since: not this job's to judge
        yield Expired(path=path, root=root, kind=kind, watch=job.watch,
                      age_days=round(age / DAY, 2), identity=Identity.of(st))


def delete(item: Expired) -> Pruned:
    """Deletes ``item`` if it is still the file judged, not following any symlink below its
    output folder."""
    rel = relative_to(item.root, item.path.parent)
    if rel is None:
        return Pruned(item, False, "not inside its output folder")
    try:
        dir_fd = open_dir(item.root, rel)
    except OSError as exc:
        return Pruned(item, False, f"its folder cannot be opened safely: {exc.strerror or exc}")
    try:
        removed = fsutil.remove_name(dir_fd, item.path.name, item.identity.same)
    except OSError as exc:
        return Pruned(item, False, exc.strerror or str(exc))
    finally:
        os.close(dir_fd)
    return Pruned(item, removed, None if removed else "it changed or went since it was judged")


def prune(watches: Sequence[WatchSettings], ledger: Ledger, *, dry_run: bool = False,
          on_deleted: Callable[[str], None] | None = None,
          now: float | None = None) -> list[Pruned]:
    """Deletes (``dry_run``: only lists) every expired file, logging each; ``on_deleted(kind)``
    counts a deletion (``Metrics.observe_pruned`` fits)."""
    results = []
    for item in expired(watches, ledger, now):
        fields = {"path": str(item.path), "file": item.kind, "watch": item.watch,
                  "age_days": item.age_days}
        if dry_run:
            results.append(Pruned(item, False))
            continue
        result = delete(item)
        results.append(result)
        if result.deleted:
            log.info("retention.deleted", **fields)
            if on_deleted is not None:
                on_deleted(item.kind)
        else:
            log.warning("retention.kept", reason=result.error, **fields)
    return results
