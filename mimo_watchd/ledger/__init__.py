"""The ledger: the ``Ledger`` protocol the program uses, and its implementations.

``open_ledger`` is where a backend is chosen; the rest of the program sees only the protocol.
SQLite (``sqlite``) is the embedded default; PostgreSQL (``postgres``, the ``[postgres]``
extra) lets a fleet of hosts share one ledger.
"""

from __future__ import annotations

from pathlib import Path

from mimo_watchd.config import LedgerSettings
from mimo_watchd.errors import ConfigError, LedgerError
from mimo_watchd.ledger.interface import Billed, Job, Ledger, State
from mimo_watchd.ledger.sqlite import LEDGER_FILE, SqliteLedger

__all__ = ["Billed", "Job", "Ledger", "LedgerError", "SqliteLedger", "State", "open_ledger",
           "read_ledger"]


def open_ledger(state_dir: Path, settings: LedgerSettings | None = None, *,
                thorough: bool = False) -> Ledger:
    """The ledger ``settings`` choose: SQLite under ``state_dir`` by default, made there if
    there is none (``thorough``: every page read first), or the fleet's PostgreSQL. Raises
    LedgerError when it cannot be opened, LedgerLostError when it is corrupt, ConfigError when
    the backend cannot be used."""
    if settings is None or settings.backend == "sqlite":
        return SqliteLedger(state_dir, thorough=thorough)
    return _postgres(settings, state_dir)


def read_ledger(state_dir: Path, settings: LedgerSettings | None = None) -> Ledger | None:
    """The ledger for reading only, None when there is none; opening an SQLite one writes
    nothing (for the read commands). The fleet's database is the fleet's: opening it creates
    its tables only when a daemon has not yet."""
    if settings is not None and settings.backend != "sqlite":
        return _postgres(settings, state_dir)
    if not (state_dir / LEDGER_FILE).exists():
        return None
    return SqliteLedger(state_dir, readonly=True)


def _postgres(settings: LedgerSettings, state_dir: Path) -> Ledger:
    try:
        from mimo_watchd.ledger.postgres import open_postgres
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise
        raise ConfigError([
            "ledger.backend: postgres needs psycopg, which is not installed: "
            "pip install 'mimo-watchd[postgres]'"]) from exc
    return open_postgres(settings, state_dir)
