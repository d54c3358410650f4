"""Turning a settled file into work: the one answer to "have we seen this file?".

The watchers and the settler may offer a file many times (events, rescans, restarts); the
settler's memory of what it handed out only spares repeated probes. The ledger has the last
word: a file is new work unless a QUEUED or PROCESSING job already tracks it with the same
size and mtime. A file changed while it waits updates its queued job instead (the ledger's
``enqueue``). Whether its *content* was seen before (a copy under another name) is the
duplicate policy's question, asked when the job runs (``jobs``).
"""

from __future__ import annotations

import structlog

from mimo_watchd.errors import SourceChangedError
from mimo_watchd.inputs import hash_below
from mimo_watchd.ledger import Job, Ledger
from mimo_watchd.settle import Ready
from mimo_watchd.timestamps import iso_seconds

log = structlog.get_logger("mimo_watchd.intake")


def admit(ledger: Ledger, ready: Ready) -> Job | None:
    """The QUEUED job of a settled file, or None when there is nothing new to do."""
    path = ready.path
    active = ledger.active_for_path(str(path))
    if active is not None and (active.size, active.mtime_ns) == (ready.size, ready.mtime_ns):
        return None
    try:
        # Read without following a symlink below the root: the name may have been swapped
        # since it settled.
        sha256, identity = hash_below(ready.watch.path, path)
    except (SourceChangedError, OSError) as exc:
        if not isinstance(exc.__cause__ or exc, FileNotFoundError):  # vanished: nothing to say
            log.warning("intake.unreadable", path=str(path), reason=str(exc))
        return None
    job = ledger.enqueue(watch=str(ready.watch.path), path=str(path), size=identity.size,
                         mtime_ns=identity.mtime_ns, sha256=sha256,
                         arrived_at=iso_seconds(ready.arrived_at))
    log.debug("intake.queued", path=str(path), job=job.id)
    return job
