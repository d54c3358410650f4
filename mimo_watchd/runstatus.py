"""What the running daemon reports about itself: ``status.json``, the systemd STATUS line and
the pause reason ``/healthz`` gives, from one reading of its state.

``status.json`` (in ``state_dir``) is what ``mimo-watchd status`` and the tests read. Besides the
queue and the pause (reason and since when) it says whether intake is quiet: ``intake_busy``
is true while a watch has events not passed on or a scan queued or running, or the scheduler
is admitting settled files; ``settling`` counts the files the settler holds. These are read in
the order files flow through them, so a file moving on meanwhile is still counted further on:
once a status shows intake quiet and nothing queued or in progress (and, for a polling watch,
two more poll rounds), everything that arrived before it was written has been dealt with.

The file is replaced atomically; when the state folder is full (a pause of its own), it is
rewritten in place instead, so that the pause can still be read.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import structlog

from mimo_watchd.config import Settings
from mimo_watchd.fsutil import atomic_write
from mimo_watchd.ledger.guard import GuardedLedger
from mimo_watchd.metrics import Metrics
from mimo_watchd.notify import Notifier
from mimo_watchd.outputs import dumps
from mimo_watchd.pausegate import PauseGate
from mimo_watchd.scheduler import Scheduler
from mimo_watchd.settle import Settler
from mimo_watchd.timestamps import iso_seconds, now_iso
from mimo_watchd.watcher import WatchSet

log = structlog.get_logger("mimo_watchd.runstatus")

STATUS_FILE = "status.json"


class Reported(Protocol):
    """What of the daemon the status reads."""

    settings: Settings
    ledger: GuardedLedger
    gate: PauseGate
    settler: Settler
    watchset: WatchSet
    metrics: Metrics
    notifier: Notifier
    scheduler: Scheduler
    started: float


class StatusWriter:
    """Renders and writes the daemon's status (thread-safe)."""

    def __init__(self, daemon: Reported) -> None:
        self._d = daemon
        self._lock = threading.Lock()
        self._write_failed = False

    def paused(self) -> str | None:
        """"paused since <when>: <why>" while intake or API work is paused, else None."""
        reason, since = self._pause()
        return None if reason is None else f"paused since {iso_seconds(since)}: {reason}"

    def _pause(self) -> tuple[str | None, float | None]:
        d = self._d
        if d.ledger.problem is not None:
            return f"{d.ledger.problem}; intake and API work wait", d.ledger.since
        return d.gate.reason, d.gate.since

    def line(self) -> str:
        """The one-line STATUS= text for systemd."""
        c = self._d.ledger.counts()
        line = (f"queued {c['QUEUED']}, in progress {c['PROCESSING']}, done {c['DONE']}, "
                f"failed {self._d.ledger.failed_files()}")
        reason, since = self._pause()
        return line if reason is None else f"PAUSED since {iso_seconds(since)}: {reason}; {line}"

    def document(self, *, stopped: bool = False) -> dict[str, Any]:
        """What ``status.json`` holds."""
        d = self._d
        updated_at = now_iso()  # before anything is looked at: it is all at least this recent
        busy = d.watchset.busy()
        settling = d.settler.pending()
        intake_busy = busy or d.scheduler.admitting or bool(d.scheduler.unadmitted)
        counts = d.ledger.counts()
        reason, since = self._pause()
        answers, writes = d.ledger.held()
        return {
            "pid": None if stopped else os.getpid(),
            "running": not stopped,
            "updated_at": updated_at,
            "started_at": iso_seconds(d.started),
            "paused": reason is not None,
            "paused_reason": reason,
            "paused_since": iso_seconds(since) if since is not None else None,
            "queued": counts["QUEUED"],
            "in_progress": counts["PROCESSING"],
            "settling": settling,
            "intake_busy": intake_busy,
            "held_in_memory": {"answers": answers, "writes": writes},
            "watches": d.watchset.status(),
        }

    def write(self, *, stopped: bool = False) -> None:
        """Writes ``status.json`` and tells systemd and the metrics; never raises."""
        d = self._d
        try:
            doc = self.document(stopped=stopped)
            line = self.line()
        except Exception as exc:  # a ledger error: the daemon's policy deals with it
            log.warning("status.unavailable", reason=str(exc))
            return
        d.metrics.set_queue(doc["queued"], doc["in_progress"])
        d.metrics.set_paused(doc["paused"])
        if not stopped:
            d.notifier.status(line)
        text = dumps(doc)
        with self._lock:
            self._store(d.settings.state_dir / STATUS_FILE, text)

    def _store(self, path: Path, text: str) -> None:
        try:
            try:
                atomic_write(path, text, overwrite=True)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                _rewrite_in_place(path, text.encode("utf-8"))
        except OSError as exc:
            if not self._write_failed:
                log.warning("status.write_failed", path=str(path), reason=exc.strerror)
            self._write_failed = True
            return
        if self._write_failed:
            log.info("status.write_recovered", path=str(path))
        self._write_failed = False


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrites the file's own blocks (no new space needed while it does not grow)."""
    with path.open("r+b") as fh:
        fh.write(data)
        fh.truncate()


def read(state_dir: Path, attempts: int = 3) -> dict[str, Any] | None:
    """The status a daemon wrote in ``state_dir``, or None (none, or unreadable)."""
    for _ in range(attempts):
        try:
            doc = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            time.sleep(0.05)  # caught mid-rewrite (in place, when the folder is full)
            continue
        return doc if isinstance(doc, dict) else None
    return None
