"""The ``mimo-watchd`` command line: transcribe, emulate, run, status, retry, prune, check.

Building the parser imports nothing heavy (``--help`` answers at once): each command imports
what it needs when it runs, and ``emulate`` hands its options to the emulator's own parser.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimo_watchd import __version__
from mimo_watchd.errors import ConfigError, MimoWatchdError
from mimo_watchd.exitcodes import ExitCode, for_error

if TYPE_CHECKING:
    from mimo_watchd.config import ApiSettings

CONFIG_HELP = "the YAML configuration file (see config.example.yaml)"
EXIT_CODES = """\
exit codes: 0 ok; 1 some file failed; 2 usage; 3 status: no daemon running; 68 check --api:
the API could not be reached; 69 the API refused (key, balance) or --once ended paused; 75
another daemon holds the state folder, or it is full; 78 configuration, key or ledger problem
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimo-watchd", epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Drop-folder transcription daemon for Xiaomi's MiMo speech-recognition API.")
    p.add_argument("--version", action="version", version=f"mimo-watchd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("transcribe", help="transcribe files once, writing NAME.txt and NAME.json")
    t.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="audio files (any format PyAV decodes; the same file given twice is "
                   "transcribed once)")
    t.add_argument("-c", "--config", type=Path,
                   help="take API and audio settings from this file (default: built-in "
                   "defaults, the key from $MIMO_API_KEY)")
    t.add_argument("-o", "--output-dir", type=Path, help="write sidecars here (default: beside "
                   "each input)")
    t.add_argument("--force", action="store_true", help="overwrite existing sidecars")
    t.add_argument("--language", choices=("auto", "zh", "en"),
                   help="transcription language (default: api.language, else auto)")
    t.add_argument("--stream", action="store_true", help="use streaming responses")
    t.add_argument("--json", action="store_true", help="print each result as JSON to stdout")
    t.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="log lines on stderr: json, console, or auto (json when stderr is not "
                   "a terminal)")

    sub.add_parser("emulate", add_help=False,
                   help="serve a local stand-in for the MiMo API (mimo-watchd emulate --help "
                   "for its options; port 8765 unless --port)")

    r = sub.add_parser("run", help="run the daemon in the foreground (logs on stdout)")
    r.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    r.add_argument("--once", action="store_true",
                   help="process what is there (and what arrives meanwhile), then exit: 0 when "
                   "all went well, 1 when some file failed")

    s = sub.add_parser("status", help="files queued, in progress, done, failed; paused and why "
                       "(exit 3 when no daemon runs)")
    s.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    s.add_argument("--json", action="store_true", help="print the status as one JSON document")
    s.add_argument("--failures", type=int, default=10,
                   help="recent failures to list (default %(default)s)")

    rt = sub.add_parser("retry", help="move failed files back into their watch and queue them")
    rt.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    rt.add_argument("--failed", action="store_true", help="every file in the failed folders")
    rt.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                    help="failed files to move back (where they are now, or where they arrived)")

    pr = sub.add_parser("prune", help="delete files whose retention period is over (watches' "
                        "retention); --dry-run lists them")
    pr.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    pr.add_argument("--dry-run", action="store_true",
                    help="list what would be deleted, delete nothing")

    c = sub.add_parser("check", help="validate the config, folders, hooks and key; --api tries "
                       "a request")
    c.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    c.add_argument("--api", action="store_true",
                   help="send one second of silence to the API (exit 69: refused, 68: "
                   "unreachable)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "emulate":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "transcribe":
            return cmd_transcribe(args)
        if args.command == "emulate":
            return _emulate(extra)
        from mimo_watchd import commands

        return int(getattr(commands, f"cmd_{args.command}")(args))
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return ExitCode.CONFIG
    except MimoWatchdError as exc:
        # A refusal to start (another daemon runs, a corrupt ledger): one line, its own code.
        print(f"mimo-watchd {args.command}: {exc.reason}", file=sys.stderr)
        return for_error(exc)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _emulate(argv: list[str]) -> int:
    from mimo_watchd.emulator import cli as emulator_cli

    parser = argparse.ArgumentParser(prog="mimo-watchd emulate",
                                     description="Serve the MiMo ASR API emulator.")
    emulator_cli.add_arguments(parser)
    return emulator_cli.run(parser.parse_args(argv))


def _api_and_audio(args: argparse.Namespace) -> tuple[ApiSettings, Any]:
    import dataclasses

    from mimo_watchd.config import default_api_settings, default_audio_settings, load

    if args.config:
        settings = load(args.config)
        api, audio = settings.api, settings.audio
    else:
        api, audio = default_api_settings(), default_audio_settings()
    overrides: dict[str, Any] = {}
    if args.language:
        overrides["language"] = args.language
    if args.stream:
        overrides["stream"] = True
    if overrides:
        api = dataclasses.replace(api, **overrides)
    return api, audio


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Transcribes each file once (a path given twice is one file); sidecars beside it (or in
    --output-dir), named as ``sidecar_stems`` says; the input is untouched."""
    from concurrent.futures import ThreadPoolExecutor

    import structlog

    from mimo_watchd import logsetup
    from mimo_watchd.billing import Price
    from mimo_watchd.client import MimoClient
    from mimo_watchd.config import resolve_api_key
    from mimo_watchd.outputs import dumps, write_sidecars
    from mimo_watchd.records import Transcribed
    from mimo_watchd.transcription import FileTranscriber

    log = structlog.get_logger("mimo_watchd.cli")
    files = sidecar_stems(args.files, args.output_dir)
    progress = _Progress(len(files))
    # On a terminal the progress lines are the per-file summary; logs keep to warnings.
    logsetup.configure("warning" if progress.enabled else "info", args.log_format)
    api, audio = _api_and_audio(args)
    key = resolve_api_key(api)
    client = MimoClient(api, key)
    failures: list[str] = []

    def one(job: tuple[Path, Path, str]) -> dict[str, Any] | None:
        path, folder, stem = job
        started = time.monotonic()
        try:
            if not path.is_file():
                raise MimoWatchdError("not a regular file" if path.exists() else "no such file")
            if not args.force:
                existing = [folder / f"{stem}{s}" for s in (".txt", ".json")
                            if (folder / f"{stem}{s}").exists()]
                if existing:
                    raise FileExistsError(errno.EEXIST, "exists", str(existing[0]))
            runner = FileTranscriber(client, audio, language=api.language)
            result = runner.run(path)
            doc = Transcribed.from_result(result, path=str(path.resolve()),
                                          original_path=str(path.resolve()),
                                          price=Price.of(api)).to_json()
            sidecars = write_sidecars(doc, folder, stem, overwrite=args.force)
        except (MimoWatchdError, OSError) as exc:
            if isinstance(exc, FileExistsError):
                reason = f"{exc.filename} exists (use --force to overwrite)"
            else:
                reason = exc.reason if isinstance(exc, MimoWatchdError) else str(exc)
            reason = reason.removeprefix(f"{path}: ")  # audio errors already name the file
            failures.append(f"{path}: {reason}")
            log.error("file.failed", path=str(path), reason=reason,
                      seconds=round(time.monotonic() - started, 3))
            progress.step(path, f"FAILED: {reason}")
            return None
        log.info("file.done", path=str(path), outcome="done", txt=str(sidecars["txt"]),
                 audio_seconds=round(result.info.duration_seconds, 3),
                 billed_seconds=result.usage.get("seconds"),
                 tokens=result.usage.get("total_tokens"), chunks=len(result.chunks),
                 attempts=result.attempts, seconds=round(time.monotonic() - started, 3))
        progress.step(path, f"{result.info.duration_seconds:.1f} s audio, "
                      f"{result.usage.get('seconds')} s billed, "
                      f"{len(result.chunks)} chunk(s) -> {sidecars['txt']}")
        return doc

    try:
        with ThreadPoolExecutor(max_workers=max(1, api.max_concurrency)) as pool:
            docs = list(pool.map(one, files))
    finally:
        client.close()
    if args.json:
        for doc in docs:
            if doc is not None:
                sys.stdout.write(dumps(doc, indent=None))
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    return ExitCode.FAILED if failures else ExitCode.OK


def sidecar_stems(files: list[Path], output_dir: Path | None) -> list[tuple[Path, Path, str]]:
    """Each distinct input (by real path: a file given twice is transcribed once) with the
    folder and stem of its sidecars.

    The daemon's naming rule (``placement.candidates``), by argument order: the first file
    of a stem in a folder gets it (``tones.txt``); a later one with another extension keeps
    its extension (``tones.mp3.txt``). Files already in the folder are not other inputs: they
    stop a file unless --force (they may be its own earlier transcript).
    """
    from mimo_watchd import outputs, placement

    seen: set[str] = set()
    taken: set[tuple[str, str]] = set()
    out: list[tuple[Path, Path, str]] = []
    for path in files:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        folder = output_dir or path.parent
        where = os.path.realpath(folder)
        for _, stem in placement.candidates(path.name, outputs.suffixes("done")):
            if (where, stem) not in taken:
                taken.add((where, stem))
                out.append((path, folder, stem))
                break
    return out


class _Progress:
    """Progress on a terminal: a line per finished file, ``[done/total]``; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.enabled = sys.stderr.isatty()
        self._lock = threading.Lock()

    def step(self, path: Path, detail: str) -> None:
        with self._lock:
            self.count += 1
            if self.enabled:
                sys.stderr.write(f"[{self.count}/{self.total}] {path}: {detail}\n")
                sys.stderr.flush()


