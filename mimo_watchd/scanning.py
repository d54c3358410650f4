"""Walking a watched folder safely: every candidate regular file now in it, nothing outside it.

Symlinks are never followed, neither to folders nor to files. A symlink pointing inside the tree
is skipped as well: its target is taken under its own name, and taking the link too would
transcribe the same audio twice (and moving a link to ``processed/`` moves no audio). Each folder
is opened relative to its parent with ``O_NOFOLLOW``, so a folder swapped for a symlink mid-walk
is not entered; FIFOs, sockets and devices are told apart by their directory-entry type and never
opened. Files and folders that vanish mid-walk are skipped silently.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mimo_watchd.config import WatchSettings
from mimo_watchd.inputs import DIR_FLAGS, open_dir
from mimo_watchd.names import NameFilter, name_filter
from mimo_watchd.paths import relative_to

_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # vanished, or swapped for a symlink


def scan(
    watch: WatchSettings,
    *,
    below: Path | None = None,
    on_error: Callable[[OSError], None] | None = None,
    on_skip: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Every candidate regular file now in the watch (or in its folder ``below``), safely walked.

    ``on_error`` hears of folders that exist but cannot be read (vanished ones are skipped);
    ``on_skip`` of each regular file in a folder walked that the name rules do not take.
    """
    rel = "" if below is None else relative_to(watch.path, below)
    if rel is None or (rel and not takes_folder(watch, rel)):
        return
    try:
        top = open_dir(watch.path, rel)
    except OSError as exc:
        _report(on_error, exc)
        return
    # (dir fd, its relative path, sub-folders still to enter or None before listing): only the
    # folders on the current path are open, so a wide tree cannot exhaust file descriptors.
    stack: list[tuple[int, str, list[str] | None]] = [(top, rel, None)]
    try:
        while stack:
            fd, dir_rel, pending = stack[-1]
            if pending is None:
                files, subdirs = _listing(fd, dir_rel, watch, on_error, on_skip)
                stack[-1] = (fd, dir_rel, subdirs)
                yield from files
            elif pending:
                name = pending.pop()
                try:
                    sub = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    _report(on_error, exc)
                    continue
                stack.append((sub, f"{dir_rel}/{name}" if dir_rel else name, None))
            else:
                stack.pop()
                os.close(fd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def rules(watch: WatchSettings) -> NameFilter:
    """The compiled name rules of a watch."""
    return name_filter(watch.recursive, watch.include, watch.exclude)


def accepts(watch: WatchSettings, path: Path) -> bool:
    """Whether ``path`` (below ``watch.path``) passes the name rules of the watch; no I/O."""
    rel = relative_to(watch.path, path)
    return rel is not None and rules(watch).takes_file(rel)


def takes_folder(watch: WatchSettings, rel: str) -> bool:
    """Whether the watch looks into its folder ``rel`` and every folder above it."""
    filt = rules(watch)
    return all(filt.takes_dir(p) for p in prefixes(rel))


def prefixes(rel: str) -> Iterator[str]:
    """The relative paths of a path's folders and itself: "a/b/c" -> "a", "a/b", "a/b/c"."""
    parts = rel.split("/")
    for i in range(len(parts)):
        yield "/".join(parts[: i + 1])


def _listing(
    fd: int, rel: str, watch: WatchSettings, on_error: Callable[[OSError], None] | None,
    on_skip: Callable[[Path], None] | None = None,
) -> tuple[list[Path], list[str]]:
    """The candidate files and the sub-folders to enter of the open folder ``fd``."""
    filt = rules(watch)
    files: list[Path] = []
    subdirs: list[str] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    # d_type answers both without a stat: links, FIFOs and devices are neither.
                    if entry.is_dir(follow_symlinks=False):
                        if filt.takes_dir(child):
                            subdirs.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        if filt.takes_leaf(child):
                            files.append(watch.path / child)
                        elif on_skip is not None:
                            on_skip(watch.path / child)
                except OSError:
                    continue  # vanished between readdir and the fallback stat
    except OSError as exc:
        _report(on_error, exc)
    return files, subdirs


def _report(on_error: Callable[[OSError], None] | None, exc: OSError) -> None:
    """Passes on a failure to read a folder, unless the folder merely vanished."""
    if on_error is not None and exc.errno not in _GONE:
        on_error(exc)
