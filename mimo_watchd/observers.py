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

``backlog`` tells whether an observer still holds events it has not handed to its handler (in
the kernel's queue, being read, waiting to be paired as a move, queued or being dispatched)
and ``polls`` how many rounds a polling observer has completed: together they say when
everything that happened in a watch so far has been passed on.
"""

from __future__ import annotations

import array
import errno
import fcntl
import functools
import os
import termios
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
from watchdog.observers.polling import PollingEmitter

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
        self._handling = False  # a batch read from the kernel is being handed on
        super().__init__()

    def _check_inotify_fd(self) -> bool:
        readable: bool = super()._check_inotify_fd()
        if readable:
            self._handling = True  # set before the read empties the kernel's queue
        return readable

    def run(self) -> None:
        """watchdog's loop, noting when each batch read has been handed on."""
        while self.should_keep_running():
            for event in self.read_events():
                self.handle_event(event)
            self._handling = False

    def holds_events(self) -> bool:
        """Whether the kernel holds events not read yet, or a batch read is being handled."""
        count = array.array("i", [0])
        try:
            fcntl.ioctl(self._inotify_fd, termios.FIONREAD, count)
        except (OSError, AttributeError):
            count[0] = 0  # closed: nothing more will come
        return count[0] > 0 or self._handling

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


class _CountingPollingEmitter(PollingEmitter):
    """watchdog's polling emitter, counting the rounds it completed."""

    rounds = 0

    def queue_events(self, timeout: float) -> None:
        super().queue_events(timeout)
        self.rounds += 1


def polling_observer(
    handler: FileSystemEventHandler, root: str, *, recursive: bool, interval: float
) -> BaseObserver:
    """A started polling observer of ``root`` (lstat: it never enters symlinked folders)."""
    emitter = functools.partial(_CountingPollingEmitter, stat=os.lstat, listdir=os.scandir)
    obs = BaseObserver(emitter, timeout=interval)  # type: ignore[arg-type]  # as watchdog does
    return _started(obs, handler, root, recursive, _POLLING_EVENTS)


def backlog(obs: BaseObserver | None) -> bool:
    """Whether the observer holds events its handler has not had yet (or a poll round runs).

    Looked at in the order events flow (kernel, reader, move pairing, the observer's queue), so
    an event moving on meanwhile is still found at a later stage. The handover from watchdog's
    move pairing to its queue is not seen: for those microseconds an event may go unnoticed.
    """
    if obs is None:
        return False
    if isinstance(obs, _InotifyObserver) and obs.inotify_fd.holds_events():
        return True
    for emitter in tuple(obs.emitters):
        if isinstance(emitter, PollingEmitter) and emitter._lock.locked():
            return True  # a round is comparing snapshots
        group = getattr(emitter, "_inotify", None)
        pairing = getattr(getattr(group, "_move_event_grouper", None), "_queue", None)
        if getattr(pairing, "_queue", None):
            return True  # held for up to half a second to pair a move's two halves
    return int(obs.event_queue.unfinished_tasks) > 0


def polls(obs: BaseObserver | None) -> int:
    """Poll rounds a polling observer has completed (0 for inotify)."""
    if obs is None:
        return 0
    return sum(e.rounds for e in tuple(obs.emitters) if isinstance(e, _CountingPollingEmitter))


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
