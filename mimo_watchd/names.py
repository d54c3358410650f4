"""Which file names a watch takes: include/exclude globs and the temp names of known senders.

Pure functions of names and plain values (no settings, no file system), so that watchdog's
dispatcher thread can call them for every event and the scanner for every directory entry at
no cost, and the configuration checks can use the very same rules.

Never taken, whatever ``include`` says:

- any dot-file and anything below a dot-directory: rsync's ``.name.XXXXXX``, Syncthing's
  ``.syncthing.name.tmp``, ProFTPD's ``.in.name.``, Nextcloud's ``.name.~rand``, swap files;
- Syncthing's ``~syncthing~name.tmp``;
- ``*.part`` (browsers, Nextcloud), ``*.filepart`` (WinSCP), ``*.crdownload`` (Chrome),
  ``*.tmp``, ``*.lftp`` (lftp).

Syncthing conflict copies (``name.sync-conflict-YYYYMMDD-HHMMSS-ID.ext``) are whole files of their
own and are taken like any other name. Globs are case-insensitive (``*.wav`` takes ``CALL.WAV``)
and read like ``.gitignore`` lines: a glob without ``/`` matches a name, one with ``/`` matches the
path relative to the watch root (``*`` may span folders there: ``processed/*`` covers everything
below). Excluding a directory, by its name or its relative path, excludes everything below it.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass

_TEMP_SUFFIXES = (".part", ".filepart", ".crdownload", ".tmp", ".lftp")
_ANY_BELOW = ("\0", "\0\0/\0\0")


def is_temp_name(name: str) -> bool:
    """True for a name some sender uses while the file is still being written, or a hidden name."""
    if name.startswith("."):
        return True
    folded = name.casefold()
    if folded.startswith("~syncthing~") and folded.endswith(".tmp"):
        return True
    return folded.endswith(_TEMP_SUFFIXES)


def _regex(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p.casefold()) for p in patterns))


@dataclass(frozen=True)
class Globs:
    """Globs split into name globs and relative-path globs, compiled case-insensitively."""

    names: re.Pattern[str] | None
    paths: re.Pattern[str] | None

    @classmethod
    def compile(cls, patterns: tuple[str, ...]) -> Globs:
        paths = [p.lstrip("/") for p in patterns if "/" in p]
        return cls(_regex([p for p in patterns if "/" not in p]), _regex(paths))

    def match(self, name: str, rel: str) -> bool:
        """Whether a name glob matches ``name`` or a path glob matches ``rel``."""
        if self.names is not None and self.names.match(name.casefold()):
            return True
        return self.paths is not None and bool(self.paths.match(rel.casefold()))

    def covers_dir(self, name: str, rel: str) -> bool:
        """Whether everything below the directory ``rel`` matches (so it need not be walked)."""
        if self.match(name, rel):
            return True
        # NUL never occurs in a real name, so only globs that take any name at any depth below
        # (``dir/*``, ``dir/**``) match both probes.
        rel = rel.casefold()
        return self.paths is not None and all(
            self.paths.match(f"{rel}/{probe}") for probe in _ANY_BELOW)


@dataclass(frozen=True)
class NameFilter:
    """The compiled name rules of one watch."""

    recursive: bool
    include: Globs
    exclude: Globs

    def takes_dir(self, rel: str) -> bool:
        """Whether the scanner descends into the directory at ``rel`` (relative, '/'-joined)."""
        name = rel.rsplit("/", 1)[-1]
        hidden = name.startswith(".")
        return self.recursive and not hidden and not self.exclude.covers_dir(name, rel)

    def takes_file(self, rel: str) -> bool:
        """Whether a file at ``rel`` (relative to the root, '/'-joined) is a candidate."""
        parts = rel.split("/")
        if not parts[-1] or (len(parts) > 1 and not self.recursive):
            return False
        for i in range(len(parts) - 1):
            if not self.takes_dir("/".join(parts[: i + 1])):
                return False
        return self.takes_leaf(rel)

    def takes_leaf(self, rel: str) -> bool:
        """``takes_file`` for a file whose folders are known to be taken (the scanner's case)."""
        name = rel.rsplit("/", 1)[-1]
        if is_temp_name(name) or self.exclude.match(name, rel):
            return False
        return self.include.match(name, rel)


@functools.lru_cache(maxsize=64)
def name_filter(recursive: bool, include: tuple[str, ...], exclude: tuple[str, ...]) -> NameFilter:
    """The compiled rules of a watch (cached: a watch's globs never change)."""
    return NameFilter(recursive, Globs.compile(include), Globs.compile(exclude))
