"""The exit codes of every command, in one place (sysexits.h where one fits)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # some file (or retry) failed
    USAGE = 2  # wrong command-line arguments (argparse's own code)
    API = 69  # EX_UNAVAILABLE: the API refused (auth, balance, network); --once ended paused
    CONFIG = 78  # EX_CONFIG: the configuration or the key is wrong; systemd does not restart
    INTERRUPTED = 130  # Ctrl-C


def killed_by(signum: int) -> int:
    """The shell's exit status of a process ended by signal ``signum``."""
    return 128 + signum
