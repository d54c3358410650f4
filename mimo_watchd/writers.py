"""Is some process still holding a file open for writing?

A writer that opens a file, writes, and pauses longer than the quiet period (a call recorder, a
slow upload, ``open-write-sleep-close``) leaves size and mtime still while it is far from done.
The kernel knows better, and two ways of asking it exist:

1. **A read lease** (``fcntl(F_SETLEASE, F_RDLCK)``) is refused with ``EAGAIN`` while any process
   has the file open for writing. About 6 system calls on a local file system (see
   ``tests/test_settle.py::test_lease_check_is_cheap``); it needs root, ``CAP_LEASE`` or the file's
   owner. The lease is dropped at once; should a writer open the file within those microseconds
   it waits for us that long, and the kernel's lease-break signal is set to ``SIGURG``, whose
   default is to be ignored (the default ``SIGIO`` would kill the daemon).
2. **A scan of ``/proc/*/fd``** when leases are refused (``EPERM``/``EACCES``/``EINVAL``): one
   ``readlink`` per open descriptor on the machine, plus ``fdinfo`` for the matches; done once
   for all files of a batch. It sees only processes we may inspect (all of them as root).

On network file systems (NFS, SMB, FUSE, ...) writers on other hosts are invisible to both, and
NFS/SMB answer lease requests with ``EAGAIN`` when they have no delegation to give, which would
read as "busy" forever: there only the ``/proc`` scan runs (for writers on this host) and the
quiet period plus the container probe do the rest.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from collections.abc import Iterable
from pathlib import Path

_NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre", "gpfs",
    "ocfs2", "gfs2", "virtiofs", "davfs", "fuse", "fuseblk", "sshfs",
})  # fmt: skip
_LEASE_SIGNAL = signal.SIGURG
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC

_fs_types: dict[int, str] = {}


def fs_type(st_dev: int) -> str:
    """The file-system type of the mount whose device is ``st_dev`` ("" when unknown)."""
    kind = _fs_types.get(st_dev)
    if kind is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                _fs_types.update(parse_mountinfo(f))
        except OSError:
            pass
        kind = _fs_types.setdefault(st_dev, "")
    return kind


def parse_mountinfo(lines: Iterable[str]) -> dict[int, str]:
    """Maps device numbers to file-system types from ``/proc/self/mountinfo`` lines."""
    found: dict[int, str] = {}
    for line in lines:
        fields = line.split()
        try:
            major, minor = fields[2].split(":")
            kind = fields[fields.index("-") + 1]
        except (IndexError, ValueError):
            continue
        found[os.makedev(int(major), int(minor))] = kind
    return found


def is_network_fs(st_dev: int) -> bool:
    """Whether writers on other hosts may write files of this device (leases cannot see them)."""
    kind = fs_type(st_dev)
    return kind in _NETWORK_FS or kind.startswith("fuse.")


def lease_busy(path: Path, st: os.stat_result) -> bool | None:
    """True while some process has ``path`` open for writing, False when none has, None when
    this way cannot tell (no lease allowed here, or the file is no longer the one of ``st``)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        # O_NONBLOCK turns "someone holds a write lease" (e.g. Samba's kernel oplocks) into
        # EWOULDBLOCK instead of waiting up to lease-break-time for it.
        return True if exc.errno == errno.EWOULDBLOCK else None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None
        fcntl.fcntl(fd, fcntl.F_SETSIG, _LEASE_SIGNAL)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def proc_writers(paths: Iterable[str]) -> set[str]:
    """The subset of ``paths`` (real, absolute) some process has open for writing, from
    ``/proc/*/fd``; ``readlink`` never touches the file itself, so a hung mount cannot stall it."""
    wanted = set(paths)
    found: set[str] = set()
    if not wanted:
        return found
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to inspect
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted and target not in found and _writable(pid, fd):
                found.add(target)
        if found == wanted:
            break
    return found


def _writable(pid: str, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("flags:"):
                    return (int(line.split()[1], 8) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        pass
    return False


def busy_files(candidates: dict[str, os.stat_result]) -> set[str]:
    """The candidates (real path -> lstat) still open for writing by some process on this host."""
    busy: set[str] = set()
    unknown: list[str] = []
    for path, st in candidates.items():
        verdict = None if is_network_fs(st.st_dev) else lease_busy(Path(path), st)
        if verdict:
            busy.add(path)
        elif verdict is None:
            unknown.append(path)
    return busy | proc_writers(unknown)
