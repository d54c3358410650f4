"""Named points where the crash-recovery tests kill the daemon for real (SIGKILL to itself).

Set ``MIMO_WATCHD_CRASH_AT=<name>`` in the daemon's environment; when execution reaches that
point the process dies exactly as with ``kill -9``. ``<name>@<text>`` dies there only for a
file whose path contains ``text`` (a file that kills the daemon every time it is processed).
Unset (always, in production) it costs one comparison. Points: ``claimed``, ``journaled``,
``sidecars``, ``move-linked``.
"""

from __future__ import annotations

import os
import signal

_TARGET, _, _SUBJECT = (os.environ.get("MIMO_WATCHD_CRASH_AT") or "").partition("@")


def reached(name: str, subject: str = "") -> None:
    """Dies here if the environment asked for a crash at ``name`` (for this ``subject``)."""
    if _TARGET and name == _TARGET and _SUBJECT in subject:
        os.kill(os.getpid(), signal.SIGKILL)
