"""One daemon per state folder: an exclusive ``flock`` on ``state_dir/mimo-watchd.lock``.

Two daemons on one ledger would recover each other's in-flight jobs and pay for them twice,
so ``run`` takes the lock before it opens the ledger and holds it for the life of the process
(the kernel drops it when the process ends, however it ends: no stale lock after a crash). The
file holds the holder's PID, for the message a second ``run`` prints. ``status``, ``retry`` and
``check`` never take it; ``holder`` tells them whether a daemon runs, writing nothing.

The lock is per state folder (a later ledger shared by a fleet will need one of its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from mimo_watchd.errors import AlreadyRunningError

LOCK_FILE = "mimo-watchd.lock"


class InstanceLock:
    """The held lock of a state folder; ``release`` (or process exit) gives it up."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, state_dir: Path) -> InstanceLock:
        """Takes the state folder's lock, or raises AlreadyRunningError naming the holder.

        Raises OSError when the folder or the lock file cannot be made.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            os.close(fd)
            raise AlreadyRunningError(str(state_dir), pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Gives the lock up (the file stays: removing it would race with a new holder)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def holder(state_dir: Path) -> int | None:
    """The PID of the daemon holding the state folder (0 when it wrote none yet), or None when
    no daemon runs there. Opens the lock file read-only and never creates anything."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_in(fd) or 0
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return None


def _pid_in(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
