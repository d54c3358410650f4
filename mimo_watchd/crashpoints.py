"""Named points where the crash-recovery tests kill the daemon for real (SIGKILL to itself).

Set ``MIMO_WATCHD_CRASH_AT=<name>`` in the daemon's environment; when execution reaches that
point the process dies exactly as with ``kill -9``. Unset (always, in production) it costs one
comparison. Points: ``claimed``, ``journaled``, ``sidecars``, ``move-linked``.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("MIMO_WATCHD_CRASH_AT") or None


def reached(name: str) -> None:
    """Dies here if the environment asked for a crash at ``name``."""
    if _TARGET is not None and name == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
