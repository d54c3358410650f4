"""The ledger: the ``Ledger`` protocol the program uses, and its SQLite implementation.

``open_ledger`` is where a backend is chosen; the rest of the program sees only the protocol.
"""

from __future__ import annotations

from pathlib import Path

from mimo_watchd.errors import LedgerError
from mimo_watchd.ledger.interface import Billed, Job, Ledger, State
from mimo_watchd.ledger.sqlite import LEDGER_FILE, SqliteLedger

__all__ = ["Billed", "Job", "Ledger", "LedgerError", "SqliteLedger", "State", "open_ledger",
           "read_ledger"]


def open_ledger(state_dir: Path, *, thorough: bool = False) -> Ledger:
    """The ledger under ``state_dir``, made there if there is none; raises LedgerError when it
    cannot be opened, LedgerLostError when it is corrupt (``thorough``: every page read)."""
    return SqliteLedger(state_dir, thorough=thorough)


def read_ledger(state_dir: Path) -> Ledger | None:
    """The ledger under ``state_dir`` for reading only, None when there is none; opening it
    writes nothing (for the read commands)."""
    if not (state_dir / LEDGER_FILE).exists():
        return None
    return SqliteLedger(state_dir, readonly=True)
