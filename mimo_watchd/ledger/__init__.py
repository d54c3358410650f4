"""The ledger: the ``Ledger`` protocol the program uses, and its SQLite implementation.

``open_ledger`` is where a backend is chosen; the rest of the program sees only the protocol.
"""

from __future__ import annotations

from pathlib import Path

from mimo_watchd.errors import LedgerError
from mimo_watchd.ledger.interface import Job, Ledger, State
from mimo_watchd.ledger.sqlite import SqliteLedger

__all__ = ["Job", "Ledger", "LedgerError", "SqliteLedger", "State", "open_ledger"]


def open_ledger(state_dir: Path) -> Ledger:
    """The ledger under ``state_dir``; raises LedgerError when it cannot be opened."""
    return SqliteLedger(state_dir)
