"""A recording in a watched folder, opened so that no symlink below the watch root is followed.

Names in the inbox belong to whoever can write there: between the moment a file is queued and
the moment it is used, its folder or the file itself may be swapped for a symlink to anything.
So an input is never used by its path. Each folder from the watch root down is opened relative
to its parent with ``O_NOFOLLOW``, then the file itself; the root may itself be a symlink (the
operator's ``/srv/drop -> /data/drop``). The descriptor then pins the inode: hashing, decoding
and copying read exactly that file, whatever happens to names meanwhile, and a move links the
name in the opened folder only after checking it still names that inode (``placement``).

An :class:`Identity` (device, inode, size, mtime) is what "the same file, unchanged" means.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from mimo_watchd.errors import SourceChangedError
from mimo_watchd.paths import is_within, relative_to

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in must not block the open; it is refused as not regular anyway.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_BLOCK = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """Which file (device, inode) and which content of it (size, mtime) a job works on."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Identity:
        return cls(**doc)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def same_file(self, st: os.stat_result) -> bool:
        """Whether ``st`` is of this inode (whatever its content now)."""
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)

    def same(self, st: os.stat_result) -> bool:
        """Whether ``st`` is of this inode, with the size and mtime it had."""
        return self == Identity.of(st)


def open_dir(root: str | os.PathLike[str], rel: str) -> int:
    """Opens the folder ``rel`` ('/'-joined, "" for the root) below ``root`` without following
    any symlink below the root; raises OSError (ELOOP, ENOTDIR: a symlink or a file is there)."""
    fd = os.open(root, DIR_FLAGS)
    for part in rel.split("/") if rel else ():
        try:
            sub = os.open(part, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        fd = sub
    return fd


def _why(exc: OSError, where: str) -> str:
    """The reason a job gives for an input it cannot open safely."""
    if exc.errno == errno.ENOENT:
        return "it disappeared before it was processed"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return (f"{where} was replaced by a symlink (or a file); nothing outside the watched "
                "folder is followed")
    return f"it cannot be opened: {exc.strerror or exc}"


class InputFile:
    """A recording below a watch root, opened without following symlinks; closes on exit.

    ``path`` is where it lies (for messages and records), ``dir_fd``/``name`` its folder and
    name as opened, ``fd`` the file itself, ``identity`` what it was when opened.
    """

    def __init__(self, path: Path, dir_fd: int, name: str, fd: int, identity: Identity) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.name = name
        self.fd = fd
        self.identity = identity

    @classmethod
    def open(cls, root: Path, path: Path) -> InputFile:
        """Opens ``path`` (below ``root``); raises SourceChangedError saying why it cannot."""
        rel = relative_to(os.path.abspath(root), os.path.abspath(path))
        if not rel:
            raise SourceChangedError(f"{path} is not inside the watched folder {root}")
        folder, _, name = rel.rpartition("/")
        try:
            dir_fd = open_dir(root, folder)
        except OSError as exc:
            raise SourceChangedError(_why(exc, "a folder on its path")) from exc
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            raise SourceChangedError(_why(exc, "it")) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            os.close(dir_fd)
            raise SourceChangedError("it is no longer a regular file")
        return cls(path, dir_fd, name, fd, Identity.of(st))

    @property
    def reader(self) -> Path:
        """A path that opens this very inode again (never the name, which may be swapped)."""
        return Path(f"/proc/self/fd/{self.fd}")

    def sha256(self) -> str:
        """The SHA-256 of the content, read through the descriptor."""
        h = hashlib.sha256()
        offset = 0
        while block := os.pread(self.fd, _BLOCK, offset):
            h.update(block)
            offset += len(block)
        return h.hexdigest()

    def unchanged(self) -> bool:
        """Whether the file still has the size and mtime it had when opened."""
        return self.identity.same(os.fstat(self.fd))

    def at_source(self) -> os.stat_result | None:
        """What its name in its folder names now (not following a symlink), or None if gone."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def hash_below(root: Path, path: Path) -> tuple[str, Identity]:
    """The SHA-256 and identity of the file at ``path`` below ``root``, read without following
    any symlink below the root (intake's hash); raises SourceChangedError saying why not."""
    with InputFile.open(root, path) as source:
        digest = source.sha256()
        if not source.unchanged():
            raise SourceChangedError("it changed while it was hashed")
        return digest, source.identity


def probe_below(roots: Iterable[Path], probe: Callable[[int, str], T], path: Path) -> T:
    """``probe(fd, name)`` of the file at ``path``, opened below the one of ``roots`` that
    holds it without following any symlink (the settler's container probe); raises
    SourceChangedError when no root holds it or it cannot be opened safely."""
    root = next((r for r in roots if is_within(os.path.abspath(path), os.path.abspath(r))),
                None)
    if root is None:
        raise SourceChangedError(f"{path} is not inside a watched folder")
    with InputFile.open(root, path) as source:
        return probe(source.fd, str(path))
