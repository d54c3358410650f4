"""``mimo-watchd emulate`` / ``python -m mimo_watchd.emulator``: serve the emulator until a signal.

The main CLI mounts it with ``add_arguments(subparser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from mimo_watchd.emulator.faults import FAULT_KINDS, FaultRule
from mimo_watchd.emulator.limits import TPM_COUNTS
from mimo_watchd.emulator.records import (
    COMPLETION_TOKENS_PER_SECOND,
    QUALITY_WINDOW_SECONDS,
    EmulatorConfig,
)
from mimo_watchd.emulator.server import Emulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8765,
                        help="port to listen on (default %(default)s; 0 picks a free port)")
    parser.add_argument("--base-path", default="/v1", help="API prefix (default %(default)s)")
    parser.add_argument("--model", default="mimo-v2.5-asr", help="the one model accepted")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted key (repeatable); default: any non-empty key",
    )
    parser.add_argument(
        "--accept-either-key",
        action="store_true",
        help="with both auth headers sent, accept one valid key (default: both must be valid)",
    )
    parser.add_argument("--latency-scale", type=float, default=1.0, help="0 answers at once")
    parser.add_argument("--rpm", type=int, default=100, help="requests per minute, 0 = no limit")
    parser.add_argument("--tpm", type=int, default=10_000, help="tokens per minute, 0 = no limit")
    parser.add_argument(
        "--tpm-counts", choices=TPM_COUNTS, default="total",
        help="what the tokens-per-minute window charges (default %(default)s)",
    )
    parser.add_argument(
        "--completion-tokens-per-second", type=float, default=COMPLETION_TOKENS_PER_SECOND,
        help="completion tokens per second of audio (default %(default)s: Xiaomi's example, "
        "4 s -> 20)",
    )
    parser.add_argument(
        "--quality-window-seconds", type=float, default=QUALITY_WINDOW_SECONDS,
        help="past this much audio in one request, drop 22.9 %% of the words, as measured for "
        "the model (default %(default)g; 0 = never)",
    )
    parser.add_argument("--max-concurrency", type=int, default=0,
                        help="requests in flight at once before 429 (default 0: no cap)")
    parser.add_argument("--max-b64-chars", type=int, default=10_000_000,
                        help="largest base64 audio in one request, in characters (default "
                             "%(default)s: the documented 10 MB)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:TIMES]",
        type=_fault,
        help="queue a fault for the next TIMES requests ('*' = all); kinds: "
        + ", ".join(FAULT_KINDS),
    )
    parser.add_argument(
        "--fault-rate",
        action="append",
        default=[],
        metavar="KIND=P",
        type=_rate,
        help="inject KIND into a random share P of requests (seeded by --seed)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random fault mix")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="pause of a slow fault")
    parser.add_argument(
        "--max-output-tokens", type=int, default=2048, help="longer answers end with 'length'"
    )
    parser.add_argument(
        "--retry-after", type=int, default=None, help="send Retry-After: N on rate-limit 429s"
    )
    parser.add_argument(
        "--sse-comments", action="store_true", help="send ': keep-alive' lines in streams"
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="log one line per request to stderr: what it received and answered (never the key)",
    )


def _fault(text: str) -> FaultRule:
    kind, _, times = text.partition(":")
    try:
        return FaultRule(kind, None if times == "*" else int(times or 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> tuple[str, float]:
    kind, sep, p = text.partition("=")
    try:
        if not sep:
            raise ValueError("expected KIND=P")
        FaultRule(kind)
        return kind, float(p)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The ``EmulatorConfig`` the parsed options describe."""
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        base_path=args.base_path,
        model=args.model,
        api_keys=frozenset(args.api_keys) if args.api_keys else None,
        accept_either_key=args.accept_either_key,
        max_b64_chars=args.max_b64_chars,
        rpm=args.rpm or None,
        tpm=args.tpm or None,
        tpm_counts=args.tpm_counts,
        completion_tokens_per_second=args.completion_tokens_per_second,
        quality_window_seconds=args.quality_window_seconds or None,
        max_concurrency=args.max_concurrency or None,
        latency_scale=args.latency_scale,
        faults=tuple(args.fault),
        fault_rate=dict(args.fault_rate),
        seed=args.seed,
        slow_seconds=args.slow_seconds,
        max_output_tokens=args.max_output_tokens,
        retry_after=args.retry_after,
        sse_comments=args.sse_comments,
        verbose=args.verbose,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; prints the base URL first. Returns the exit status."""
    try:
        emulator = Emulator(config_from_args(args)).start()
    except (OSError, ValueError) as exc:
        print(f"mimo-watchd emulate: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setFormatter(logging.Formatter("%(asctime)s emulator: %(message)s"))
        logger = logging.getLogger("mimo_watchd.emulator")
        logger.addHandler(to_stderr)
        logger.setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(emulator.url, flush=True)
        # A timeout keeps the main thread returning to the interpreter, where handlers run.
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mimo_watchd.emulator``."""
    parser = argparse.ArgumentParser(
        prog="python -m mimo_watchd.emulator", description="Serve the MiMo ASR API emulator."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
