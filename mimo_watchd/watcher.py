"""Watching the drop folders: every candidate file that appears reaches the sink as an Arrival.

How nothing is missed:

- ``start`` begins observing and *then* scans every watch, so a file that lands during the scan
  is seen by one or the other (a file seen twice is harmless: the Settler hands it out once).
- A full rescan runs every ``rescan_interval`` seconds and at once when the kernel's inotify queue
  overflows (watchdog 7 does not tell its handlers; :mod:`mimo_watchd.observers` tells us).
- A directory created in or moved into the tree is scanned (its files arrive as "moved" when it
  was renamed in, so they need no quiet wait).
- When inotify cannot watch (``ENOSPC``: ``fs.inotify.max_user_watches``; ``EMFILE``:
  ``max_user_instances``), also for a sub-folder created later, which watchdog would skip
  silently, the watch falls back to polling with a loud ``inotify_limit_fallback`` error and
  status mode ``polling-fallback``. ``reconfigure`` tries inotify again (raise the limit, reload).
- A watch whose observer died (its folder deleted, unmounted, or replaced by another) is
  restarted and rescanned by the supervisor thread within a second or two.

Scans never leave the tree and never take symlinks, FIFOs or devices: see
:mod:`mimo_watchd.scanning`. Names are filtered by :mod:`mimo_watchd.names`; a file an event
announces or a scan finds that the rules do not take is reported once to ``on_ignored`` with
the reason.

``status()`` says per watch whether it is ``busy``: a scan queued or running, or events its
observer has not passed on yet; with ``polls``, the poll rounds a polling watch completed.
Once a watch is not busy (and, when polling, has completed a round begun afterwards),
everything that happened in it before has reached the sink.

Threads: watchdog's emitter and dispatcher threads only filter names and call the sink (which
must not block: ``Settler.offer``); anything slower (scans, fallbacks, restarts) is queued for
the one supervisor thread. Nothing raised in a handler escapes it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from mimo_watchd.config import WatchSettings
from mimo_watchd.names import is_temp_name
from mimo_watchd.observers import (
    LIMIT_ERRORS,
    alive,
    backlog,
    halt,
    inotify_observer,
    limit_reason,
    polling_observer,
    polls,
)
from mimo_watchd.paths import relative_to
from mimo_watchd.scanning import accepts, prefixes, rules, scan, takes_folder

__all__ = ["Arrival", "WatchSet", "accepts", "ignore_reason", "scan"]

log = structlog.get_logger("mimo_watchd.watcher")

_TICK = 1.0  # how often the supervisor checks that every observer is alive
_IGNORED_MEMORY = 4096  # ignored paths remembered, so that each is reported once


def ignore_reason(watch: WatchSettings, path: Path) -> str:
    """Why the watch does not take the file ``path`` below it (for one it does not take)."""
    rel = relative_to(watch.path, path) or path.name
    folders = rel.split("/")[:-1]
    if folders and not watch.recursive:
        return "in a sub-folder (recursive is off)"
    if folders and not all(rules(watch).takes_dir(p) for p in prefixes("/".join(folders))):
        return "in a hidden or excluded folder"
    if is_temp_name(path.name):
        return "a hidden or temporary name (a file still being written)"
    if rules(watch).exclude.match(path.name, rel):
        return "excluded"
    return "not matched by include"


@dataclass(frozen=True)
class Arrival:
    """A candidate file seen in a watch: by a scan, an inotify event or a poll."""

    watch: WatchSettings
    path: Path  # absolute, below watch.path
    event: str  # "scan" | "closed" | "moved" | "created" | "poll" ("modified" is not produced)
    at: float  # time.monotonic() when seen


@dataclass(frozen=True)
class _Job:
    """Work for the supervisor thread, queued by watchdog's threads."""

    kind: str  # "rescan" (after an overflow) | "limit" (fall back to polling) | "scan" (a folder)
    watched: _Watched
    below: Path | None = None
    event: str = "scan"


class _Watched:
    """One watch and what observes it now (replaced as a whole by ``reconfigure``)."""

    def __init__(self, watch: WatchSettings) -> None:
        self.watch = watch
        self.observer: BaseObserver | None = None
        self.mode = "polling" if watch.polling else "inotify"
        self.reason: str | None = None
        self.real_root = str(watch.path)
        self.root_id: tuple[int, int] | None = None
        self.overflows = 0
        self.limit_hit: str | None = None
        self.rescan_queued = False
        self.work = 0  # scans queued or running for this watch

    def outer(self, raw: bytes | str) -> Path | None:
        """An event path (below the real root) as a path below the configured root."""
        rel = relative_to(self.real_root, os.fsdecode(raw))
        return None if rel is None else self.watch.path / rel


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's dispatcher thread: filters names, calls the sink, queues the rest."""

    def __init__(self, owner: WatchSet, watched: _Watched, *, polling: bool) -> None:
        self._owner = owner
        self._watched = watched
        self._polling = polling

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._route(event)
        except Exception as exc:
            log.error("watch_event_failed", path=str(self._watched.watch.path),
                                  event=type(event).__name__, error=repr(exc))

    def _route(self, event: FileSystemEvent) -> None:
        w = self._watched
        moved = isinstance(event, FileMovedEvent | DirMovedEvent)
        raw = event.dest_path if moved else event.src_path
        if not raw:
            return  # moved out of the tree
        path = w.outer(raw)
        if path is None:
            return
        if event.is_directory:
            rel = relative_to(w.watch.path, path)
            if rel and takes_folder(w.watch, rel):
                kind = "poll" if self._polling else "moved" if moved else "scan"
                self._owner._request(_Job("scan", w, path, kind))
            return
        if not accepts(w.watch, path):
            self._owner._ignored(w.watch, path)
            return
        if self._polling:
            kind = "poll"
        elif isinstance(event, FileClosedEvent):
            kind = "closed"
        else:
            kind = "moved" if moved else "created"
        self._owner._emit(Arrival(w.watch, path, kind, time.monotonic()))


class WatchSet:
    """All watches of the daemon: observers, scans, rescans, fallbacks, reloads."""

    def __init__(
        self,
        watches: Sequence[WatchSettings],
        sink: Callable[[Arrival], None],
        *,
        rescan_interval: float,
        on_ignored: Callable[[Path, str], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_ignored = on_ignored
        self._ignored_paths: OrderedDict[Path, None] = OrderedDict()
        self._count_lock = threading.Lock()
        self._rescan_interval = rescan_interval
        self._initial = tuple(watches)
        self._watched: dict[Path, _Watched] = {}
        self._lock = threading.RLock()
        self._requests: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="mimo-watchd-watchset",
                                        daemon=True)

    # -- public -------------------------------------------------------------------------------

    def start(self) -> None:
        """Observes every watch, scans each (the sink gets "scan" arrivals), starts rescans."""
        with self._lock:
            for watch in self._initial:
                w = _Watched(watch)
                self._observe(w)
                self._watched[watch.path] = w
        for w in list(self._watched.values()):
            self._scan(w)
        self._thread.start()

    def stop(self) -> None:
        """Stops the supervisor and every observer, joining their threads."""
        self._stopping.set()
        self._requests.put(None)
        if self._thread.ident is not None:
            self._thread.join()
        with self._lock:
            watched, self._watched = list(self._watched.values()), {}
        for w in watched:
            halt(w.observer)

    def rescan(self) -> None:
        """Scans every watch now."""
        for w in list(self._watched.values()):
            self._scan(w)

    def reconfigure(self, watches: Sequence[WatchSettings]) -> None:
        """Applies a new list of watches: unchanged ones keep running; new or changed ones are
        observed (before the old observer stops) and scanned; fallbacks retry inotify."""
        with self._lock:
            old = dict(self._watched)
            current: dict[Path, _Watched] = {}
            fresh: list[_Watched] = []
            for watch in watches:
                prev = old.pop(watch.path, None)
                if prev is not None and prev.watch == watch and prev.mode != "polling-fallback":
                    current[watch.path] = prev
                    continue
                w = _Watched(watch)
                self._observe(w)
                current[watch.path] = w
                fresh.append(w)
                if prev is not None:
                    old[watch.path] = prev
            self._watched = current
        for prev in old.values():
            halt(prev.observer)
        for w in fresh:
            self._scan(w)

    def status(self) -> list[dict[str, Any]]:
        """Per watch: path, mode (inotify|polling|polling-fallback), reason, alive, overflows,
        busy (events not passed on yet, a scan queued or running) and polls (rounds done)."""
        return [
            {"path": str(w.watch.path), "mode": w.mode, "reason": w.reason,
             "alive": alive(w.observer), "overflows": w.overflows, "busy": self._busy(w),
             "polls": polls(w.observer)}
            for w in list(self._watched.values())
        ]  # fmt: skip

    def busy(self) -> bool:
        """Whether any watch is busy (see ``status``)."""
        return any(self._busy(w) for w in list(self._watched.values()))

    def _busy(self, w: _Watched) -> bool:
        # The observer first: events flow from it to the supervisor's queue, so one that moves
        # on while we look is still counted there.
        return backlog(w.observer) or w.work > 0

    def alive(self) -> bool:
        """Whether the supervisor and every observer (with all its threads) are running.

        A watch whose folder is missing (an unmounted share) has no observer and does not count:
        the supervisor retries it every second and ``status()`` says why, whereas a systemd
        restart would not bring the folder back, only loop."""
        if not self._thread.is_alive():
            return False
        return all(w.observer is None or alive(w.observer) for w in list(self._watched.values()))

    # -- for the handlers (watchdog's threads: never block, never raise) --------------------------

    def _emit(self, arrival: Arrival) -> None:
        """Hands an arrival to the sink; a failing sink is logged, never raised."""
        try:
            self._sink(arrival)
        except Exception as exc:
            log.error("arrival_sink_failed", path=str(arrival.path), error=repr(exc))

    def _request(self, job: _Job) -> None:
        """Queues work for the supervisor thread (SimpleQueue.put never blocks)."""
        self._count(job.watched, +1)
        self._requests.put(job)

    def _count(self, w: _Watched, step: int) -> None:
        with self._count_lock:
            w.work += step

    def _ignored(self, watch: WatchSettings, path: Path) -> None:
        """Reports a file the rules do not take, once per path (never raises)."""
        with self._count_lock:
            if path in self._ignored_paths:
                self._ignored_paths.move_to_end(path)
                return
            self._ignored_paths[path] = None
            if len(self._ignored_paths) > _IGNORED_MEMORY:
                self._ignored_paths.popitem(last=False)
        if self._on_ignored is not None:
            try:
                self._on_ignored(path, ignore_reason(watch, path))
            except Exception as exc:
                log.error("ignored_sink_failed", path=str(path), error=repr(exc))

    # -- observing ---------------------------------------------------------------------------

    def _observe(self, w: _Watched) -> None:
        """Starts an observer for ``w``: inotify unless polling is configured or inotify ran
        out of watches; failures leave it stopped with a reason, retried by the supervisor."""
        w.real_root = os.path.realpath(w.watch.path)
        w.root_id = None
        try:
            st = os.stat(w.real_root)
            w.root_id = (st.st_dev, st.st_ino)
            if w.mode == "inotify":
                try:
                    obs = self._start_inotify(w)
                except OSError as exc:
                    if exc.errno not in LIMIT_ERRORS:
                        raise
                    self._fall_back(w, w.limit_hit or limit_reason(w.real_root, exc))
                else:
                    if w.limit_hit is None:
                        w.observer, w.reason = obs, None
                        return
                    halt(obs)  # a sub-folder got no watch: inotify would miss its files
                    self._fall_back(w, w.limit_hit)
            w.observer = self._start_polling(w)
            if w.mode == "polling":
                w.reason = None
        except OSError as exc:
            w.observer = None
            if w.reason != str(exc):
                w.reason = str(exc)
                log.error("watch_unavailable", path=str(w.watch.path), error=str(exc),
                               retry_seconds=_TICK)

    def _start_inotify(self, w: _Watched) -> BaseObserver:
        def on_overflow() -> None:  # inotify reader thread: count and queue, nothing more
            w.overflows += 1
            if not w.rescan_queued:
                w.rescan_queued = True
                self._request(_Job("rescan", w))

        def on_limit(reason: str) -> None:
            if w.limit_hit is None:
                w.limit_hit = reason
                self._request(_Job("limit", w))

        def takes_dir(real: str) -> bool:  # a folder below the real root worth a watch
            path = w.outer(real)
            rel = None if path is None else relative_to(w.watch.path, path)
            return not rel or takes_folder(w.watch, rel)

        return inotify_observer(_Handler(self, w, polling=False), w.real_root,
                                recursive=w.watch.recursive, on_overflow=on_overflow,
                                on_limit=on_limit, takes_dir=takes_dir)

    def _start_polling(self, w: _Watched) -> BaseObserver:
        return polling_observer(_Handler(self, w, polling=True), w.real_root,
                                recursive=w.watch.recursive,
                                interval=w.watch.poll_interval_seconds)

    def _fall_back(self, w: _Watched, reason: str) -> None:
        w.mode = "polling-fallback"
        w.reason = f"inotify limit reached ({reason}); polling every " \
                   f"{w.watch.poll_interval_seconds:g} s"
        log.error("inotify_limit_fallback", path=str(w.watch.path), reason=reason,
                       poll_interval_seconds=w.watch.poll_interval_seconds,
                       hint="raise fs.inotify.max_user_watches / max_user_instances, then reload")

    # -- the supervisor thread ---------------------------------------------------------------

    def _supervise(self) -> None:
        next_rescan = time.monotonic() + self._rescan_interval
        next_heal = time.monotonic() + _TICK
        while not self._stopping.is_set():
            timeout = max(0.0, min(next_heal, next_rescan) - time.monotonic())
            try:
                job = self._requests.get(timeout=timeout)
            except queue.Empty:
                job = None
            if self._stopping.is_set():
                return
            try:
                if job is not None:
                    try:
                        self._run(job)
                    finally:
                        self._count(job.watched, -1)
                now = time.monotonic()
                if now >= next_heal:
                    next_heal = now + _TICK
                    self._heal()
                if now >= next_rescan:
                    next_rescan = now + self._rescan_interval
                    self.rescan()
            except Exception as exc:
                log.error("watcher_supervisor_error", error=repr(exc))

    def _current(self, w: _Watched) -> bool:
        return self._watched.get(w.watch.path) is w

    def _run(self, job: _Job) -> None:
        w = job.watched
        if not self._current(w):
            return  # queued for a watch that has been replaced or removed since
        if job.kind == "rescan":
            w.rescan_queued = False
            log.warning("inotify_overflow", path=str(w.watch.path), overflows=w.overflows,
                             action="rescan")
            self._scan(w)
        elif job.kind == "limit":
            with self._lock:
                if not self._current(w) or w.mode != "inotify":
                    return
                old = w.observer
                self._fall_back(w, w.limit_hit or "unknown")
                self._observe(w)
            halt(old)
            self._scan(w)
        else:
            self._scan(w, below=job.below, event=job.event)

    def _heal(self) -> None:
        """Restarts observers that died or whose root folder was replaced, then rescans."""
        for w in list(self._watched.values()):
            if alive(w.observer) and self._same_root(w):
                continue
            with self._lock:
                if not self._current(w):
                    continue
                old, w.observer = w.observer, None
                halt(old)
                self._observe(w)
            if w.observer is not None:
                log.warning("watch_restarted", path=str(w.watch.path), mode=w.mode)
                self._scan(w)

    def _same_root(self, w: _Watched) -> bool:
        try:
            st = os.stat(w.watch.path)
        except OSError:
            return w.root_id is None
        return (st.st_dev, st.st_ino) == w.root_id

    def _scan(self, w: _Watched, *, below: Path | None = None, event: str = "scan") -> int:
        """Hands every candidate of the watch (or of its folder ``below``) to the sink."""
        def failed(exc: OSError) -> None:
            log.warning("scan_error", path=str(w.watch.path), error=str(exc))

        started = time.monotonic()
        count = 0
        self._count(w, +1)
        try:
            for path in scan(w.watch, below=below, on_error=failed,
                             on_skip=lambda p: self._ignored(w.watch, p)):
                if self._stopping.is_set():
                    break  # a scan of a huge tree must not hold up stop()
                self._emit(Arrival(w.watch, path, event, time.monotonic()))
                count += 1
        finally:
            self._count(w, -1)
        log.debug("scanned", path=str(below or w.watch.path), files=count,
                       seconds=round(time.monotonic() - started, 3))
        return count
