"""``Input``: the recording to read, given by path or as an already opened file.

An opened file (an object with ``fileno()``, or a bare descriptor) is never reopened by name:
the caller may have opened it with ``O_NOFOLLOW`` after checking it, and a symlink swapped in
since must not be followed. Every reader of such an input reads the descriptor with ``pread``
at its own position, so a decode and a re-split running in two threads never disturb each
other, nor the caller's own position. The caller keeps ownership: nothing here closes it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

_READ_BLOCK = 1 << 20


class HasFileno(Protocol):
    """An open binary file: anything with a descriptor (``open(..., 'rb')``, a socket file...)."""

    def fileno(self) -> int: ...


Source = str | os.PathLike[str] | int | HasFileno


class PositionalReader(io.RawIOBase):
    """A read-only, seekable view of a descriptor through ``pread``, with its own position.

    Closing it leaves the descriptor open: it belongs to the caller."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = os.pread(self._fd, len(buffer), self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = os.fstat(self._fd).st_size + offset
        else:
            raise ValueError(f"unsupported whence {whence}")
        return self._pos

    def tell(self) -> int:
        return self._pos


@dataclass(frozen=True)
class Input:
    """A recording to read: a path (opened anew by each reader) or a caller's descriptor."""

    name: str  # for messages: the path, or the display name given with an opened file
    path: Path | None = None
    fd: int | None = None

    @classmethod
    def of(cls, source: Source | Input, name: str | None = None) -> Input:
        """The input for a path, a descriptor or an open binary file (named ``name``)."""
        if isinstance(source, Input):
            return source
        if isinstance(source, int):
            return cls(name or f"descriptor {source}", fd=source)
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            return cls(name or str(path), path=path)
        fd = source.fileno()
        return cls(name or str(getattr(source, "name", f"descriptor {fd}")), fd=fd)

    def stat(self) -> os.stat_result:
        """``stat`` of the file (``fstat`` of an opened one)."""
        return self.path.stat() if self.path is not None else os.fstat(self._fd())

    @contextmanager
    def binary(self) -> Iterator[BinaryIO]:
        """A seekable binary reader of the whole file, closed (never the caller's fd) after."""
        if self.path is not None:
            with self.path.open("rb") as f:
                yield f
            return
        with io.BufferedReader(PositionalReader(self._fd())) as reader:
            yield reader

    def for_pyav(self) -> str | BinaryIO:
        """What ``av.open`` is given: the path itself, or a fresh positional reader."""
        if self.path is not None:
            return str(self.path)
        return PositionalReader(self._fd())  # type: ignore[return-value]

    def read_bytes(self) -> bytes:
        """Every byte of the file (for a small file sent as it is)."""
        with self.binary() as f:
            f.seek(0)
            return f.read()

    def _fd(self) -> int:
        assert self.fd is not None
        return self.fd
