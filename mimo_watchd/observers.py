"""The watchdog observers of a watch, with what watchdog 7 does not tell by itself.

watchdog 7.1 reacts to an inotify queue overflow (``IN_Q_OVERFLOW``) by logging a warning and
rebuilding its recursive watches; no event reaches a handler. It raises ``ENOSPC``/``EMFILE``
when the root folder cannot be watched, but swallows them for sub-folders, which would then be
missed in silence. :class:`ReportingInotifyFD`, its inotify reader, reports both: an overflow
after watchdog's rebuild (so a rescan started then sees every file), a limit error as it happens.
It also refuses watches on hidden and excluded folders (a Syncthing ``.stversions`` tree, an
excluded ``processed/`` inside the watch), which would use up watches and fill the queue.

Each watch gets an inotify instance of its own (one of ``max_user_instances``, 128 by default),
so that an overflow or a limit concerns that watch alone.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyFullEmitter
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)
from watchdog.observers.polling import PollingObserverVFS

LIMIT_ERRORS = (errno.ENOSPC, errno.EMFILE)
_TIMEOUT = 0.5  # watchdog's queue wait: bounds how long stopping an observer takes
# Close-write, rename and create are every arrival; IN_MODIFY (one per write() call) and
# IN_OPEN/IN_CLOSE_NOWRITE (our own reads) would only fill the kernel queue.
_INOTIFY_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent, FileMovedEvent, FileCreatedEvent, DirCreatedEvent, DirMovedEvent]
_POLLING_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent]


def limit_reason(path: str, exc: OSError) -> str:
    """The folder and the limit it hit (ENOSPC: watches, EMFILE: instances), for the log."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{path}: {code} ({exc.strerror})"


class ReportingInotifyFD(InotifyFD):
    """watchdog's inotify reader, also reporting queue overflows and watch-limit errors, and
    refusing watches on folders the watch never takes from (hidden or excluded ones)."""

    def __init__(
        self,
        on_overflow: Callable[[], None],
        on_limit: Callable[[str], None],
        takes_dir: Callable[[str], bool],
    ) -> None:
        self._on_overflow = on_overflow
        self._on_limit = on_limit
        self._takes_dir = takes_dir
        super().__init__()

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)  # watchdog rebuilds its watches on an overflow first
        if event.is_queue_overflow:
            self._on_overflow()

    def add_callback(
        self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId
    ) -> WatchDescriptor:
        if not self._takes_dir(os.fsdecode(path)):
            # watchdog skips a sub-folder it cannot watch (and, walking on, all below it), so
            # .stversions/ or an excluded processed/ cost no watches and fill no queue.
            raise OSError(errno.EPERM, "not watched: excluded or hidden folder")
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno in LIMIT_ERRORS:
                self._on_limit(limit_reason(os.fsdecode(path), exc))
            raise


class _InotifyObserver(BaseObserver):
    """watchdog's InotifyObserver (with full move events) on a reader of our own."""

    def __init__(self, fd: ReportingInotifyFD) -> None:
        super().__init__(InotifyFullEmitter, timeout=_TIMEOUT, inotify_fd=fd)
        self.inotify_fd = fd
        fd.start()

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self.inotify_fd.stop()
        self.inotify_fd.join()


def inotify_observer(
    handler: FileSystemEventHandler,
    root: str,
    *,
    recursive: bool,
    on_overflow: Callable[[], None],
    on_limit: Callable[[str], None],
    takes_dir: Callable[[str], bool],
) -> BaseObserver:
    """A started inotify observer of ``root``; raises OSError (ENOSPC/EMFILE at the limits)."""
    obs = _InotifyObserver(ReportingInotifyFD(on_overflow, on_limit, takes_dir))
    return _started(obs, handler, root, recursive, _INOTIFY_EVENTS)


def polling_observer(
    handler: FileSystemEventHandler, root: str, *, recursive: bool, interval: float
) -> BaseObserver:
    """A started polling observer of ``root`` (lstat: it never enters symlinked folders)."""
    obs = PollingObserverVFS(os.lstat, os.scandir, polling_interval=interval)
    return _started(obs, handler, root, recursive, _POLLING_EVENTS)


def _started(obs: BaseObserver, handler: FileSystemEventHandler, root: str, recursive: bool,
             events: list[type[FileSystemEvent]]) -> BaseObserver:
    """Schedules ``handler`` on ``root`` and starts ``obs``; a failed start leaves no thread."""
    obs.schedule(handler, root, recursive=recursive, event_filter=events)
    try:
        obs.start()
    except BaseException:
        halt(obs)
        raise
    return obs


def alive(obs: BaseObserver | None) -> bool:
    """Whether the observer and all its threads (emitters, inotify reader) are running."""
    if obs is None or not obs.is_alive():
        return False
    if isinstance(obs, _InotifyObserver) and not obs.inotify_fd.is_alive():
        return False
    return all(e.is_alive() for e in tuple(obs.emitters))


def halt(obs: BaseObserver | None) -> None:
    """Stops an observer and joins its threads (also one that never started)."""
    if obs is None:
        return
    obs.stop()
    if obs.ident is not None:
        obs.join()
