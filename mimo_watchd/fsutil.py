"""File-system primitives that never lose or overwrite a user's file.

- ``atomic_write``: temp file in the same folder, fsync, then a no-clobber link (or rename when
  overwriting is asked for), then fsync of the folder.
- ``safe_move``: hard link + unlink within a file system (atomic and no-clobber), copy + fsync +
  unlink across file systems; the source is removed only once the copy is durable.
- ``free_stem``: a file stem under which none of the given names exist yet ("call", "call-1", …).
- ``sha256_file``: the content hash that identifies a recording.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mimo_watchd import crashpoints

TEMP_PREFIX = ".mimo-watchd-"
# Errors meaning "this file system cannot hard-link", where a checked rename is the fallback.
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def fsync_dir(folder: Path) -> None:
    """Makes a rename/link/unlink in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (e.g. certain FUSE) refuse fsync on folders
    finally:
        os.close(fd)


def _place(src: Path, dst: Path, *, crash_point: str | None = None) -> None:
    """Gives ``src`` the additional/new name ``dst`` without ever replacing an existing ``dst``."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(errno.EEXIST, "file exists", str(dst)) from exc
        os.rename(src, dst)
        return
    if crash_point:
        crashpoints.reached(crash_point)
    os.unlink(src)


def atomic_write(path: Path, data: bytes | str, *, overwrite: bool = False) -> Path:
    """Writes ``data`` to ``path`` all-or-nothing; raises FileExistsError unless ``overwrite``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".tmp")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _place(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    fsync_dir(folder)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_stem(folders: Iterable[tuple[Path, Iterable[str]]], stem: str) -> str:
    """The first of ``stem``, ``stem-1``, ``stem-2``… for which no ``folder/stem+suffix`` exists."""
    pairs = [(f, list(suffixes)) for f, suffixes in folders]
    n = 0
    while True:
        candidate = stem if n == 0 else f"{stem}-{n}"
        if not any((f / (candidate + s)).exists() or (f / (candidate + s)).is_symlink()
                   for f, suffixes in pairs for s in suffixes):
            return candidate
        n += 1


def safe_move(src: Path, dst: Path) -> Path:
    """Moves ``src`` to exactly ``dst`` (which must not exist); durable before the source goes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        _place(src, dst, crash_point="move-linked")
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(src, dst)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)
    return dst


def _copy_across(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=TEMP_PREFIX, suffix=".tmp")
    tmp_path = Path(tmp)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp_path)
        _place(tmp_path, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    fsync_dir(dst.parent)
    os.unlink(src)


def remove_stale_temps(folder: Path, *, older_than: float) -> int:
    """Deletes the temp files of ``atomic_write``/``safe_move`` in ``folder`` that a process
    killed mid-write left behind (modified before ``older_than``, a ``time.time()``: before this
    process started, so no write of ours is in progress). Returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(".tmp")):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and \
                    entry.stat(follow_symlinks=False).st_mtime < older_than:
                os.unlink(entry.path)
                removed += 1
    return removed


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()
