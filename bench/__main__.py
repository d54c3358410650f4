"""``python -m bench SCENARIO [options]``: run a benchmark, print its table, update BENCHMARKS.md.

Scenarios: saturation, overhead, latency, long, idle, backlog, voicemail (each runs the real
daemon against the real emulator next to its baselines), pacing (the daemon next to an oracle
pacer at the account's limits), fleet (several daemons on one inbox, with and without a shared
PostgreSQL ledger), ``all`` (every one of them, in that order), ``soak`` and ``fleet-soak``
(fault injection, kill -9, SIGHUP, SIGSTOP; exit non-zero when an invariant fails), and the
audio layer's ``audio-formats``, ``long-file-rss`` and ``vad-compare``. ``--no-write`` leaves
BENCHMARKS.md alone; ``--smoke`` runs tiny sizes (the test suite's check of the harness).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench import audio_formats, fleet_soak, long_file_rss, soak, vad_compare
from bench.report import Section, command_line, emit, machine, write_section
from bench.scenarios import (
    backlog,
    fleet,
    idle,
    latency,
    longfile,
    overhead,
    pacing,
    saturation,
    voicemail,
)

SCENARIOS: dict[str, ModuleType] = {
    "saturation": saturation, "overhead": overhead, "latency": latency, "long": longfile,
    "idle": idle, "backlog": backlog, "voicemail": voicemail, "pacing": pacing, "fleet": fleet,
}
# --smoke: sizes that finish in seconds (they prove the harness works, not the figures).
SMOKE: dict[str, dict[str, object]] = {
    "saturation": {"files": 12}, "overhead": {"files": 20}, "latency": {"samples": 3,
                                                                        "polling_samples": 0},
    "long": {"hours": 0.05, "first_minutes": 2.0, "tpm_minutes": 3.0},
    "idle": {"files": 40, "folders": 4, "seconds_idle": 3.0},
    "backlog": {"files": 300}, "voicemail": {"messages": 1, "hangups": 1},
    "pacing": {"workloads": "rpm", "rules": "total", "rpm_files": 12},
    "fleet": {"files": 6, "daemons": 2},
}
LEGACY: dict[str, Callable[[], None]] = {
    "audio-formats": audio_formats.main, "long-file-rss": long_file_rss.main,
    "vad-compare": vad_compare.main,
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scratch", type=Path, default=None,
                   help="folder for scratch data (default: the system temp folder)")
    p.add_argument("--no-write", dest="write", action="store_false",
                   help="print only; leave BENCHMARKS.md alone")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")


def _summary(module: ModuleType) -> str:
    """The first line of a module's docstring, as argparse help (which %-formats it)."""
    return (module.__doc__ or "").split("\n")[0].replace("%", "%%")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True)
    for name, module in SCENARIOS.items():
        sp = sub.add_parser(name, help=_summary(module))
        module.add_arguments(sp)
        _common(sp)
    sp = sub.add_parser("all", help="every scenario above, with its default sizes")
    _common(sp)
    sp = sub.add_parser("soak", help=_summary(soak))
    soak.add_arguments(sp)
    _common(sp)
    sp = sub.add_parser("fleet-soak", help=_summary(fleet_soak))
    fleet_soak.add_arguments(sp)
    _common(sp)
    for name in LEGACY:
        sp = sub.add_parser(name, help=f"the audio layer's {name} benchmark (its own options)",
                            add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _run_one(name: str, argv: list[str], args: argparse.Namespace) -> bool:
    module = SCENARIOS[name]
    if args.smoke:
        for key, value in SMOKE[name].items():
            setattr(args, key, value)
    section: Section = module.run(args)
    emit(section, argv, write=args.write and not args.smoke)
    return section.ok or args.smoke  # a smoke run checks the harness, not the figures


def _legacy(name: str, rest: list[str]) -> int:
    """Runs one of the audio layer's scripts (its own options, plus ``--no-write``), prints its
    output and records it in BENCHMARKS.md."""
    write = "--no-write" not in rest
    options = [a for a in rest if a != "--no-write"]
    sys.argv = [f"python -m bench {name}", *options]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        LEGACY[name]()
    body = out.getvalue().strip()
    print(body)
    if write:
        title = {"audio-formats": "Chunk encoding: wav vs mp3",
                 "long-file-rss": "Preparing a long recording: memory and time",
                 "vad-compare": "Silence detection: level gate vs voice-activity libraries",
                 }[name]
        write_section(name, f"## {title}\n\n`{command_line([name, *options])}` - "
                            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} - "
                            f"{machine()}\n\n```\n{body}\n```")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LEGACY:
        return _legacy(argv[0], argv[1:])
    args = parser().parse_args(argv)
    if args.scenario in ("soak", "fleet-soak"):
        if args.smoke:
            args.minutes, args.write = 0.3, False
        return int((soak if args.scenario == "soak" else fleet_soak).run(args))
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    ok = True
    for name in names:
        defaults = parser().parse_args([name])
        scenario_args = args if args.scenario != "all" else defaults
        scenario_args.scratch, scenario_args.write = args.scratch, args.write
        scenario_args.smoke = args.smoke
        ok = _run_one(name, ["all"] if args.scenario == "all" else argv, scenario_args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
