"""The command line's help: every option and positional explained, and no heavy import for it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mimo_watchd.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "av", "httpx", "structlog", "yaml", "watchdog", "prometheus_client",
         "mimo_watchd.emulator", "mimo_watchd.config", "mimo_watchd.daemon")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_option_and_positional_has_help() -> None:
    """Each option and positional of every command says what it is for."""
    parser = build_parser()
    missing = []
    for name, sub in {"": parser, **_subparsers(parser)}.items():
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert not missing


def test_help_imports_nothing_heavy() -> None:
    """``mimo-watchd --help`` and a command's help import neither the emulator (numpy) nor the
    HTTP, YAML, logging or audio libraries: the help is there at once."""
    probe = ("import sys, contextlib, io\n"
             "from mimo_watchd import cli\n"
             "for argv in (['--help'], ['run', '--help'], ['transcribe', '--help']):\n"
             "    with contextlib.suppress(SystemExit), \\\n"
             "            contextlib.redirect_stdout(io.StringIO()):\n"
             "        cli.main(argv)\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY\n"
             "                       or m.startswith(HEAVY))))\n")
    code = f"import json\nHEAVY = {HEAVY!r}\n" + probe
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert json.loads(out.stdout) == []


def test_emulate_takes_the_emulators_own_options() -> None:
    """``emulate --help`` is the emulator's help (its options, the default port); unknown
    options of other commands are still refused."""
    help_text = subprocess.run([sys.executable, "-m", "mimo_watchd", "emulate", "--help"],
                               capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert help_text.startswith("usage: mimo-watchd emulate") and "--port" in help_text
    bad = subprocess.run([sys.executable, "-m", "mimo_watchd", "status", "-c", "x", "--port", "1"],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert bad.returncode == 2 and "unrecognized arguments: --port 1" in bad.stderr
