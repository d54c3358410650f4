"""The exit codes of every command, in one place (sysexits.h and LSB where one fits)."""

from __future__ import annotations

from enum import IntEnum

from mimo_watchd.errors import (
    AlreadyRunningError,
    ConfigError,
    LedgerError,
    LedgerFullError,
    MimoWatchdError,
)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # some file (or retry) failed
    USAGE = 2  # wrong command-line arguments (argparse's own code)
    NOT_RUNNING = 3  # status: no daemon runs on this state folder (LSB's "program is not running")
    API_UNREACHABLE = 68  # check --api: no connection to the API (DNS, refused, proxy, timeout)
    API = 69  # EX_UNAVAILABLE: the API refused (auth, balance); --once ended paused
    TEMPFAIL = 75  # EX_TEMPFAIL: another daemon holds the state folder, or it is full: try later
    # EX_CONFIG: the config, the key or the ledger (corrupt, lost, unusable) needs a human;
    # systemd does not restart on it
    CONFIG = 78
    INTERRUPTED = 130  # Ctrl-C


def for_error(exc: MimoWatchdError) -> ExitCode:
    """The exit code of a command that ends with ``exc``."""
    if isinstance(exc, AlreadyRunningError | LedgerFullError):
        return ExitCode.TEMPFAIL
    if isinstance(exc, ConfigError | LedgerError):
        return ExitCode.CONFIG
    return ExitCode.FAILED


def killed_by(signum: int) -> int:
    """The shell's exit status of a process ended by signal ``signum``."""
    return 128 + signum
