"""The ledger: the ``Ledger`` protocol the program uses, and its implementations.

``open_ledger`` is where a backend is chosen; the rest of the program sees only the protocol.
SQLite (``sqlite``) is the embedded default; PostgreSQL (``postgres``, the ``[postgres]``
extra) lets a fleet of hosts share one ledger.
"""

from __future__ import annotations

from pathlib import Path

from mimo_watchd.config import LedgerSettings
from mimo_watchd.errors import ConfigError, LedgerError
from mimo_watchd.ledger.interface import Job, Ledger, State
from mimo_watchd.ledger.sqlite import SqliteLedger

__all__ = ["Job", "Ledger", "LedgerError", "SqliteLedger", "State", "open_ledger"]


def open_ledger(state_dir: Path, settings: LedgerSettings | None = None) -> Ledger:
    """The ledger ``settings`` choose (SQLite under ``state_dir`` by default); raises
    LedgerError when it cannot be opened, ConfigError when the backend cannot be used."""
    if settings is None or settings.backend == "sqlite":
        return SqliteLedger(state_dir)
    try:
        from mimo_watchd.ledger.postgres import open_postgres
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise
        raise ConfigError([
            "ledger.backend: postgres needs psycopg, which is not installed: "
            "pip install 'mimo-watchd[postgres]'"]) from exc
    return open_postgres(settings, state_dir)
