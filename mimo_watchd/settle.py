"""Deciding when a file that arrived is whole, so that half-written files are never taken.

A file is handed out (as :class:`Ready`) once all of these hold:

1. **Quiet**: a close-after-write or a rename into the tree says the sender is done, so such
   arrivals skip the wait (the target is p99 < 150 ms from close to being taken). Any other
   arrival (created, scan, poll) needs inode, size and mtime unchanged for the watch's
   ``settle_seconds``; a file found by a scan whose mtime is already that old counts as quiet.
   Any later change of the file restarts the wait, whatever event announced the file.
2. **No writer left**: no process on this host holds the file open for writing
   (:mod:`mimo_watchd.writers`), re-checked with backoff for as long as one does.
3. **Whole container**: ``probe(path)`` does not raise :class:`IncompleteAudioError`; while it
   does, the file is re-probed with backoff, and after ``incomplete_timeout`` it is handed out
   anyway with ``incomplete_reason`` set (the daemon then fails it with that reason). Any other
   outcome of the probe counts as whole: what is wrong with the file is the daemon's to report.
4. **Safe**: still a regular file (``lstat``), whose real path lies inside the watch root's.

Each (path, inode, size, mtime) is handed out once; ``forget(path)`` (after the daemon has moved
the file away) or any change of the file makes the path new again. Files that vanish are dropped.

Threads: ``offer`` and ``forget`` only append to a deque, so watchdog's threads never wait on
``poll``, which does all the I/O. Poll from one scheduler thread, sleeping at most
``next_check_in()`` (0 while arrivals wait) and no more than a few tens of milliseconds, or
woken by the sink, since offers come from other threads at any time.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mimo_watchd import backoff, writers
from mimo_watchd.config import WatchSettings
from mimo_watchd.errors import IncompleteAudioError
from mimo_watchd.paths import relative_to
from mimo_watchd.watcher import Arrival

_WHOLE_EVENTS = frozenset({"closed", "moved"})
_IDLE = 3600.0  # nothing pending: only offer() can make something ready
_WRITER_RECHECK = (0.25, 2.0)  # first and longest wait while a writer holds the file
_PROBE_RECHECK = (0.5, 30.0)  # the same while the container probes incomplete
_SWEEP_EVERY = 60.0  # drop the memory of handed-out files that are gone

Signature = tuple[int, int, int]  # (inode, size, mtime_ns)


@dataclass(frozen=True)
class Ready:
    """A file that is complete now, or that never became whole audio (``incomplete_reason``)."""

    watch: WatchSettings
    path: Path
    size: int
    mtime_ns: int
    arrived_at: float  # wall clock (time.time()) of the first sighting
    incomplete_reason: str | None = None


@dataclass
class _Entry:
    watch: WatchSettings
    path: Path
    arrived_at: float
    sig: Signature
    changed_at: float  # clock() when sig last changed
    whole_sig: Signature | None = None  # sig right after a close/rename: whole without a wait
    due: float = 0.0
    real: str = ""
    st: os.stat_result | None = None
    writer_checks: int = 0  # times found busy since the last change: the backoff's attempt
    probe_checks: int = 0  # times probed incomplete since the last change
    incomplete_since: float | None = None

    def update(self, st: os.stat_result, now: float) -> None:
        """Records the file's current state; a change restarts the quiet wait and the backoffs."""
        self.st = st
        sig = _signature(st)
        if sig != self.sig:
            self.sig = sig
            self.changed_at = now
            self.writer_checks = self.probe_checks = 0
            self.incomplete_since = None


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _real_dir(path: Path, cache: dict[Path, str]) -> str:
    real = cache.get(path)
    if real is None:
        real = cache[path] = os.path.realpath(path)
    return real


def _backoff(attempt: int, bounds: tuple[float, float]) -> float:
    first, longest = bounds
    return backoff.delay(attempt, initial=first, cap=longest)


class Settler:
    """Turns arrivals into ready files: quiet period, no writer left, whole container."""

    def __init__(
        self,
        *,
        probe: Callable[[Path], object],
        incomplete_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._incomplete_timeout = incomplete_timeout
        self._clock = clock
        self._inbox: deque[Arrival | Path] = deque()  # a bare Path asks to forget it
        self._lock = threading.Lock()
        self._entries: dict[Path, _Entry] = {}
        self._handed: dict[Path, Signature] = {}
        self._next_due = clock() + _IDLE
        self._next_sweep = clock() + _SWEEP_EVERY

    def offer(self, arrival: Arrival) -> None:
        """Notes an arrival for the next ``poll`` (thread-safe: deque.append is atomic)."""
        self._inbox.append(arrival)

    def forget(self, path: Path) -> None:
        """Drops ``path`` (pending or handed out), so that a new file there counts as new."""
        self._inbox.append(Path(path))

    def pending(self) -> int:
        """Files waiting to become ready (plus arrivals not yet looked at)."""
        return len(self._entries) + len(self._inbox)

    def next_check_in(self) -> float:
        """Seconds until ``poll`` could return something new (0 while arrivals wait)."""
        if self._inbox:
            return 0.0
        return max(0.0, self._next_due - self._clock())

    def poll(self) -> list[Ready]:
        """The files complete now; each (path, inode, size, mtime) is returned once."""
        with self._lock:
            now = self._clock()
            self._drain(now)
            if now >= self._next_sweep:
                self._sweep()
                self._next_sweep = now + _SWEEP_EVERY
            real_dirs: dict[Path, str] = {}  # resolved once per poll, not once per file
            candidates = [
                e for e in list(self._entries.values())
                if e.due <= now and self._quiet(e, now, real_dirs)
            ]
            busy = writers.busy_files({e.real: e.st for e in candidates if e.st is not None})
            ready: list[Ready] = []
            for e in candidates:
                if e.real in busy:
                    e.writer_checks += 1
                    e.due = now + _backoff(e.writer_checks, _WRITER_RECHECK)
                    continue
                done = self._probed(e, now)
                if done is not None:
                    ready.append(done)
            self._next_due = min((e.due for e in self._entries.values()), default=now + _IDLE)
            return ready

    def _drain(self, now: float) -> None:
        """Folds the queued arrivals into entries, one lstat per path however many events."""
        seen: dict[Path, tuple[WatchSettings, bool, bool, float]] = {}
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, Path):
                self._entries.pop(item, None)
                self._handed.pop(item, None)
                seen.pop(item, None)
                continue
            _, whole, scanned, first = seen.get(item.path, (None, False, False, item.at))
            seen[item.path] = (
                item.watch, whole or item.event in _WHOLE_EVENTS,
                scanned or item.event == "scan", min(first, item.at),
            )  # fmt: skip
        for path, (watch, whole, scanned, first) in seen.items():
            st = self._lstat(path)
            if st is None:
                continue
            sig = _signature(st)
            if self._handed.get(path) == sig:
                self._entries.pop(path, None)
                continue
            entry = self._entries.get(path)
            if entry is None:
                changed_at = now
                if scanned and time.time() - st.st_mtime >= watch.settle_seconds:
                    changed_at = now - watch.settle_seconds  # found old by a scan: quiet already
                # Arrival.at is time.monotonic() by definition, whatever clock we were given.
                arrived_at = time.time() - max(0.0, time.monotonic() - first)
                entry = self._entries[path] = _Entry(watch, path, arrived_at, sig, changed_at)
            entry.update(st, now)
            entry.watch = watch
            if whole:
                entry.whole_sig = entry.sig
            entry.due = now

    def _lstat(self, path: Path) -> os.stat_result | None:
        """The file's lstat when it is still a regular file; otherwise it is dropped."""
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):  # gone, or a symlink, FIFO, socket, device
            self._entries.pop(path, None)
            return None
        return st

    def _quiet(self, e: _Entry, now: float, real_dirs: dict[Path, str]) -> bool:
        """Whether the entry passed its quiet period and is safe to look into; else reschedules."""
        st = self._lstat(e.path)
        if st is None:
            return False
        e.update(st, now)
        if e.whole_sig != e.sig:
            left = e.changed_at + e.watch.settle_seconds - now
            if left > 0:
                e.due = now + left
                return False
        # The file itself is no symlink (lstat said so): resolving its folder is enough.
        root = _real_dir(e.watch.path, real_dirs)
        e.real = os.path.join(_real_dir(e.path.parent, real_dirs), e.path.name)
        if not relative_to(root, e.real):
            self._entries.pop(e.path, None)  # reached through a symlink out of the tree
            return False
        return True

    def _probed(self, e: _Entry, now: float) -> Ready | None:
        """Probes the container; returns the Ready file, or reschedules the entry."""
        reason: str | None = None
        try:
            self._probe(e.path)
        except IncompleteAudioError as exc:
            if e.incomplete_since is None:
                e.incomplete_since = now
            deadline = e.incomplete_since + self._incomplete_timeout
            if now < deadline:
                e.probe_checks += 1
                e.due = min(now + _backoff(e.probe_checks, _PROBE_RECHECK), deadline)
                return None
            reason = str(exc) or type(exc).__name__
        except Exception:
            pass  # not ours to judge: the daemon's own probe reports what is wrong with it
        before = e.sig
        st = self._lstat(e.path)  # the probe took a while: was the file written meanwhile?
        if st is None:
            return None
        e.update(st, self._clock())
        if e.sig != before:
            e.due = e.changed_at + e.watch.settle_seconds
            return None
        del self._entries[e.path]
        self._handed[e.path] = e.sig
        return Ready(e.watch, e.path, st.st_size, st.st_mtime_ns, e.arrived_at, reason)

    def _sweep(self) -> None:
        """Forgets handed-out files that are gone or replaced (the daemon moved them away)."""
        for path, sig in list(self._handed.items()):
            try:
                ino = os.lstat(path).st_ino
            except OSError:
                ino = -1
            if ino != sig[0]:
                del self._handed[path]
