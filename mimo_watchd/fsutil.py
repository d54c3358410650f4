"""File-system primitives that never lose or overwrite a user's file.

- ``atomic_write``: temp file in the same folder, fsync, then a no-clobber link (or rename when
  overwriting is asked for), then fsync of the folder.
- ``safe_move``: hard link + unlink within a file system (atomic and no-clobber), copy + fsync +
  unlink across file systems; the source is removed only once the copy is durable.
- ``link_new``/``rename_new``/``copy_new``: give an opened file (a folder's descriptor and a
  name, or the file's own descriptor) exactly one new name, never replacing what is there.
- ``remove_name``: remove a name only while it still names the file we mean, so a file swapped
  in at the last moment is never the one deleted.
- ``free_stem``: a file stem under which none of the given names exist yet ("call", "call-1", …).
- ``sha256_file``: the content hash that identifies a recording.

Every "exists" error names the target, never a temp file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from mimo_watchd import crashpoints

TEMP_PREFIX = ".mimo-watchd-"
# Errors meaning "this file system cannot hard-link", where a checked rename is the fallback.
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
_RENAME_NOREPLACE = 1  # renameat2(2)
_AT_FDCWD = -100
# renameat2 refuses RENAME_NOREPLACE here (old kernel, this file system): no atomic way.
_NO_NOREPLACE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


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
            try:
                _place(tmp_path, path)
            except FileExistsError:
                raise _exists(path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    fsync_dir(folder)
    return path


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "file exists", str(path))


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


def link_new(dir_fd: int, name: str, dst: Path) -> None:
    """Gives the file ``name`` in the folder ``dir_fd`` the new name ``dst``, not following a
    symlink there (a symlink would be linked as itself); FileExistsError if ``dst`` exists."""
    try:
        os.link(name, dst, src_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise _exists(dst) from None
    fsync_dir(dst.parent)


def rename_new(dir_fd: int, name: str, dst: Path) -> bool:
    """Renames ``name`` in the folder ``dir_fd`` to ``dst`` in one step that never replaces an
    existing ``dst`` (``renameat2`` with ``RENAME_NOREPLACE``; a symlink is moved as itself).
    FileExistsError if ``dst`` exists; False where no such rename exists (C library, kernel or
    file system), with nothing done."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(dir_fd, os.fsencode(name), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE):
        code = ctypes.get_errno()
        if code in _NO_NOREPLACE:
            return False
        if code == errno.EEXIST:
            raise _exists(dst)
        raise OSError(code, os.strerror(code), str(dst))
    fsync_dir(dst.parent)
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)
    return True


def copy_new(fd: int, dst: Path) -> None:
    """Copies the open file ``fd`` (content, mode, times) to exactly ``dst``, durable before it
    appears; FileExistsError if ``dst`` exists. Reads with ``pread``: ``fd``'s offset stays."""
    st = os.fstat(fd)
    tmp_fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=TEMP_PREFIX, suffix=".tmp")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(tmp_fd, "wb") as fout:
            offset = 0
            while block := os.pread(fd, 1024 * 1024, offset):
                fout.write(block)
                offset += len(block)
            fout.flush()
            os.fchmod(fout.fileno(), st.st_mode & 0o7777)
            os.fsync(fout.fileno())
        os.utime(tmp_path, ns=(st.st_atime_ns, st.st_mtime_ns))
        try:
            _place(tmp_path, dst)
        except FileExistsError:
            raise _exists(dst) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    fsync_dir(dst.parent)


def remove_name(dir_fd: int, name: str, ours: Callable[[os.stat_result], bool]) -> bool:
    """Removes ``name`` from the folder ``dir_fd`` if it names a file ``ours`` accepts (lstat).

    The name is first renamed aside (atomic: whatever it names at that instant moves) and the
    file checked there, so a file renamed over ``name`` between the check and the removal is
    put back, never deleted. True when removed.
    """
    try:
        if not ours(os.stat(name, dir_fd=dir_fd, follow_symlinks=False)):
            return False
    except FileNotFoundError:
        return False
    aside = f"{TEMP_PREFIX}{secrets.token_hex(8)}.aside"
    try:
        os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if ours(os.stat(aside, dir_fd=dir_fd, follow_symlinks=False)):
        os.unlink(aside, dir_fd=dir_fd)
        removed = True
    else:
        put_back(aside, dir_fd, name)
        removed = False
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)
    return removed


def put_back(src: str | Path, dir_fd: int, name: str) -> None:
    """Renames ``src`` (absolute, or in the folder ``dir_fd``), a file moved by mistake, to
    ``name`` in ``dir_fd`` again, or to the first free ``stem-N`` beside it."""
    stem, ext = os.path.splitext(name)
    n = 0
    while True:
        candidate = name if n == 0 else f"{stem}-{n}{ext}"
        try:
            os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        n += 1


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


def sha256_file(path: Path, *, follow_symlinks: bool = True) -> str:
    """The SHA-256 of the file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW))
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()
