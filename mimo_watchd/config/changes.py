"""What a reload changes: the options that differ, and those a running daemon keeps until it
restarts.

Most options apply at the next job (``Daemon._context``), at once (log level and format, the
pause probe interval, stall detection) or when the watches are reconfigured. These do not,
because what they shape is built once at start; a reload keeps their old values and says so:

- ``state_dir``: the ledger, status file and instance lock are open there;
- ``metrics.listen``: the server is bound once, before anything else runs;
- ``api.max_concurrency``: the number of worker threads;
- ``api.api_key_env``: hook commands are started with that variable removed from their
  environment; a new name would reach them until a restart;
- ``incomplete_timeout_seconds``, ``rescan_interval_seconds``: the settler and the watchers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mimo_watchd.config.schema import options
from mimo_watchd.config.settings import Settings

RESTART_ONLY = ("state_dir", "metrics.listen", "api.max_concurrency", "api.api_key_env",
                "incomplete_timeout_seconds", "rescan_interval_seconds")


def changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The options (dotted paths; a list of sections as one) whose values differ."""
    found: list[str] = []
    for key, opt in options(type(old)).items():
        a, b = getattr(old, key), getattr(new, key)
        path = f"{prefix}{key}"
        if opt.kind == "section" and a is not None and b is not None:
            found += changed(a, b, path + ".")
        elif a != b:
            found.append(path)
    return found


def applied(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``new`` as a running daemon can take it: with the old value of every option in
    ``RESTART_ONLY``; and which of those the file changed (they wait for a restart)."""
    waiting = [path for path in changed(old, new) if path in RESTART_ONLY]
    result = new
    for path in waiting:
        result = _with(result, path.split("."), _get(old, path.split(".")))
    return result, waiting


def _get(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        obj = getattr(obj, part)
    return obj


def _with(obj: Any, parts: list[str], value: Any) -> Any:
    head, *rest = parts
    inner = _with(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: inner})
