"""What the tests and the benchmarks share: waiting for a state, a deployment's folders and
config, a watch's settings, and the size of a burst that overflows the inotify queue.

``bench/`` imports this module too (through ``bench.harness``), so it imports nothing from
pytest.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mimo_watchd.config import DEFAULT_INCLUDE, WatchSettings


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """Polls ``predicate`` until it is truthy and returns that value; raises TimeoutError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# Settings that make a daemon under test quick (short quiet periods, retries and probes) and
# talkative (debug logs); the benchmarks keep the defaults, as a deployment would.
_TEST_API = {"max_retries": 2, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2,
             "timeout_base_seconds": 10.0}
_TEST_WATCH = {"settle_seconds": 0.5}
_TEST_TOP = {"retry_delay_seconds": 0.2, "pause_probe_seconds": 0.5,
             "incomplete_timeout_seconds": 3.0, "shutdown_timeout_seconds": 10.0}


@dataclass
class Deployment:
    """The folders and config of one daemon deployment under ``root``, and what it produced.

    ``test_timing`` writes configs with the tests' short waits and debug logs; without it the
    config is production-like: defaults except the API address and the given options.
    """

    root: Path
    test_timing: bool = False
    inbox: Path = field(init=False)
    processed: Path = field(init=False)
    failed: Path = field(init=False)
    state: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.inbox = self.root / "inbox"
        self.processed = self.root / "processed"
        self.failed = self.root / "failed"
        self.state = self.root / "state"
        self.config = self.root / "config.yaml"
        for p in (self.inbox, self.processed, self.failed):
            p.mkdir(parents=True, exist_ok=True)

    def write_config(self, base_url: str, *, rpm: int = 1_000_000, tpm: int = 1_000_000_000,
                     concurrency: int = 3, api: dict[str, Any] | None = None,
                     watch: dict[str, Any] | None = None,
                     extra_watches: list[dict[str, Any]] | None = None, **top: Any) -> Path:
        """Writes the config: the inbox watch (updated by ``watch``), then ``extra_watches``;
        ``api`` and ``top`` override the API and top-level options."""
        quick = self.test_timing
        doc: dict[str, Any] = {
            "api": {"base_url": base_url, "requests_per_minute": rpm, "tokens_per_minute": tpm,
                    "max_concurrency": concurrency, **(_TEST_API if quick else {}),
                    **(api or {})},
            "state_dir": str(self.state),
            "log": {"format": "json", "level": "debug" if quick else "info"},
            "watches": [{"path": str(self.inbox), "processed_dir": str(self.processed),
                         "failed_dir": str(self.failed), **(_TEST_WATCH if quick else {}),
                         **(watch or {})},
                        *(extra_watches or [])],
            **(_TEST_TOP if quick else {}),
            **top,
        }
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return self.config

    def query_ledger(self, sql: str) -> list[Any]:
        """Rows of ``sql`` on the daemon's SQLite ledger, opened read-only (WAL: the daemon
        may be writing meanwhile)."""
        db = sqlite3.connect(f"file:{self.state / 'ledger.sqlite3'}?mode=ro", uri=True,
                             timeout=30.0)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def ledger_counts(self) -> dict[str, int]:
        """Jobs per state, read from the daemon's ledger."""
        if not (self.state / "ledger.sqlite3").exists():
            return {}
        try:
            rows = self.query_ledger("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        except sqlite3.OperationalError:
            return {}  # the schema is being created
        return {str(state): int(n) for state, n in rows}

    def finished(self) -> int:
        """Jobs done or failed, read from the daemon's ledger."""
        c = self.ledger_counts()
        return c.get("DONE", 0) + c.get("FAILED", 0)

    def processed_audio(self) -> list[Path]:
        """The audio files in the processed folder (sidecars left out)."""
        return sorted(p for p in self.processed.rglob("*")
                      if p.is_file() and p.suffix not in (".json", ".txt"))

    def sidecar_docs(self) -> list[dict[str, Any]]:
        """Every JSON sidecar in the processed folder, parsed."""
        return [json.loads(p.read_text()) for p in sorted(self.processed.rglob("*.json"))]

    def failed_errors(self) -> list[dict[str, Any]]:
        """Every ``NAME.error.json`` in the failed folder, parsed."""
        return [json.loads(p.read_text()) for p in sorted(self.failed.rglob("*.error.json"))]


SETTLE = 0.3  # the quiet period of make_watch's watches


def make_watch(root: Path, **overrides: Any) -> WatchSettings:
    """The settings of a recursive watch of ``root`` with a short quiet period (``SETTLE``),
    processed and failed folders beside it; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "path": root, "recursive": True, "include": DEFAULT_INCLUDE, "exclude": (),
        "language": None, "processed_dir": root.parent / "processed",
        "failed_dir": root.parent / "failed", "output_dir": None, "polling": False,
        "poll_interval_seconds": 0.2, "settle_seconds": SETTLE, "on_success": None,
        "on_failure": None,
    }  # fmt: skip
    fields.update(overrides)
    return WatchSettings(**fields)


def whole(path: Path) -> None:
    """A container probe that finds every file whole (so only the writer check and the quiet
    period can hold a file back)."""


# The most files a burst test creates to overflow the inotify queue: beyond it (a host whose
# fs.inotify.max_queued_events was raised far above the default 16384) it would run for long
# minutes, so the test skips and says why.
MAX_BURST_FILES = 60_000


def burst_to_overflow() -> int | None:
    """How many new files overflow this host's inotify queue while nobody reads it, or None
    when that is more than MAX_BURST_FILES.

    Each file queues two events (IN_CREATE, IN_CLOSE_WRITE: the only ones the watcher asks
    for). 3,000 files beyond half the queue leave room for one read the reader may have begun
    before it was stopped (watchdog reads at most 80 KiB: 2,560 events of a 10-byte name).
    """
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    count = queued // 2 + 3_000
    return count if count <= MAX_BURST_FILES else None
