"""How many clips are decoded and encoded at once, across every file: the CPU's share.

Every file a worker holds prepares its clips in its own thread (decode, resample, level,
encode: ~0.22 s of CPU per 60 s clip in mp3). Unbounded, N files arriving together decode N
clips at once on a machine with a couple of cores, so every first clip is ready only when all
of them are: the first request leaves late, and memory holds N decoders. Through the gate at
most ``slots`` (the CPUs this process may use) clips are prepared at once, first come first
served, so clips come out one after another at the machine's full rate, in arrival order:
the first request leaves after one clip's work, and a window that opens finds the next clips
ready (``python -m bench pacing``, BENCHMARKS.md).

The gate bounds CPU work only: a clip waiting for room in the account's windows holds no slot.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


class PrepareGate:
    """A first-come-first-served semaphore of ``slots`` (default: ``usable_cpus()``).

    ``stopping`` (a callable) lets a waiter through at once when it turns true: a shutting
    down job must reach its own stop check rather than wait for others' decoding.
    """

    def __init__(self, slots: int | None = None) -> None:
        self.slots = max(1, slots if slots is not None else usable_cpus())
        self._busy = 0
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def busy(self) -> int:
        """Slots taken now."""
        with self._cond:
            return self._busy

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        with self._cond:
            return len(self._queue)

    @contextlib.contextmanager
    def slot(self, stopping: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Holds one slot for the block; waits its turn (first come, first served)."""
        me = object()
        taken = False
        with self._cond:
            self._queue.append(me)
            try:
                while self._queue[0] is not me or self._busy >= self.slots:
                    if stopping():
                        break
                    self._cond.wait(0.5)  # wake to notice ``stopping``
                else:
                    self._busy += 1
                    taken = True
            finally:
                self._queue.remove(me)
                self._cond.notify_all()
        try:
            yield
        finally:
            if taken:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def each(self, items: Iterator[T], stopping: Callable[[], bool] = lambda: False
             ) -> Iterator[T]:
        """``items``, each produced (``next``) while holding a slot: for a lazy iterator whose
        every step is the work to bound (a file's clips)."""
        while True:
            with self.slot(stopping):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item
