"""Arrival latency: from a sender closing a file to its sidecar, one file at a time, idle daemon.

The emulator keeps its latency model (0.3 s + 0.03 s per audio second); that delay is the API's,
so it is subtracted: what is left is the client's own latency. Target (inotify): p99 < 150 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from functools import partial
from pathlib import Path

from bench.floor import write_bodies
from bench.harness import (
    DaemonProc,
    Deployment,
    EmulatorProc,
    percentile,
    scratch,
    wait_for,
    words_for_seconds,
)
from bench.report import Section, Table, fmt
from bench.scenarios.common import run_floor, start_naive
from mimo_watchd.emulator import tones

NAME = "latency"
TARGET_MS = 150.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=200, help="files, inotify mode")
    p.add_argument("--polling-samples", type=int, default=30,
                   help="files, polling mode and naive (0: skip)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each file")
    p.add_argument("--poll-interval", type=float, default=1.0,
                   help="polling interval of the daemon's polling mode and of naive")


def _files(folder: Path, count: int, seconds: float, offset: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"a{offset + i:05d}.wav"
        tones.write(path, words_for_seconds(offset + i, seconds), "wav")
        out.append(path)
    return out


def _deliver(files: list[Path], inbox: Path, sidecar_dir: Path, suffix: str,
             spread: float, timeout: float = 60.0) -> list[float]:
    """Writes each file into ``inbox`` (open, write, close), waits for its sidecar; returns the
    close-to-sidecar seconds. The next file goes only after the previous one left the inbox,
    after a random pause of up to ``spread`` seconds (so that arrivals do not fall into step
    with a polling loop)."""
    rng = random.Random(1)
    out = []
    for src in files:
        time.sleep(rng.uniform(0, spread))
        data = src.read_bytes()
        dest = inbox / src.name
        with open(dest, "wb") as f:
            f.write(data)
        closed = time.monotonic()
        sidecar = sidecar_dir / (src.stem + suffix)
        wait_for(partial(os.path.exists, sidecar), timeout, f"sidecar {sidecar}",
                 interval=0.001)
        out.append(time.monotonic() - closed)
        wait_for(partial(_gone, dest), timeout, f"{dest} to be moved", interval=0.005)
        time.sleep(0.1)
    return out


def _gone(path: Path) -> bool:
    return not path.exists()


def _daemon(emu: EmulatorProc, root: Path, files: list[Path], watch: dict[str, object],
            spread: float) -> list[float]:
    dep = Deployment(root)
    dep.write_config(emu.url, watch=watch)
    daemon = DaemonProc(dep)
    try:
        daemon.wait_ready()
        time.sleep(0.5)
        return _deliver(files, dep.inbox, dep.processed, ".json", spread)
    finally:
        daemon.stop()


def run(args: argparse.Namespace) -> Section:
    secs = args.seconds
    with scratch(args.scratch, NAME) as root:
        ino_files = _files(root / "src-inotify", args.samples, secs, 0)
        poll_files = _files(root / "src-poll", args.polling_samples, secs, 20_000)
        naive_files = _files(root / "src-naive", args.polling_samples, secs, 40_000)
        write_bodies(ino_files, root / "bodies")
        with EmulatorProc(latency_scale=1.0) as emu:
            model = emu.model_latency(tones.duration(words_for_seconds(0, secs)))
            floor = run_floor(emu, root / "bodies", 1, root / "floor.json")["rtts"]
            spread = args.poll_interval
            inotify = _daemon(emu, root / "d-inotify", ino_files, {}, spread)
            polling = _daemon(emu, root / "d-polling", poll_files,
                              {"polling": True, "poll_interval_seconds": args.poll_interval},
                              spread) if poll_files else []
            naive: list[float] = []
            if naive_files:
                dep = Deployment(root / "naive")
                proc = start_naive(emu, dep, args.poll_interval)
                try:
                    time.sleep(1.0)
                    naive = _deliver(naive_files, dep.inbox, dep.processed, ".txt", spread)
                finally:
                    proc.stop()
    series = {"daemon (inotify)": inotify, "daemon (polling)": polling, "naive": naive,
              "floor": floor}
    t = Table(["ms", *series])
    for label, q in (("close-to-sidecar p50", 50), ("close-to-sidecar p99", 99)):
        t.add(label, *[1000 * percentile(v, q) for v in series.values()])
    for label, q in (("minus emulator latency p50", 50), ("minus emulator latency p99", 99)):
        t.add(label, *[1000 * (percentile(v, q) - model) for v in series.values()])
    t.add("max minus emulator latency", *[1000 * (max(v) - model) if v else None
                                          for v in series.values()])
    t.add("samples", *[len(v) for v in series.values()])
    p99 = 1000 * (percentile(inotify, 99) - model)
    ok = p99 < TARGET_MS
    verdict = (f"target p99 (inotify, minus emulator latency) < {TARGET_MS:g} ms: {fmt(p99)} ms "
               f"- {'met' if ok else 'MISSED'}")
    setup = (f"Files of {secs:g} s (16 kHz mono wav) written into the inbox one at a time "
             f"(open, write, close), the next once the previous left the inbox and a random "
             f"0-{args.poll_interval:g} s more (so arrivals fall at random points of a polling "
             "loop); the clock runs "
             f"from close() to the sidecar's appearance (checked every 1 ms). Emulator latency "
             f"model on: {1000 * model:.0f} ms per file, subtracted below. Daemon defaults "
             f"(settle_seconds 2, max_concurrency 3); polling mode and naive poll every "
             f"{args.poll_interval:g} s. Floor: the same request bodies POSTed one at a time "
             "(round trip).")
    notes = ("In polling mode a file is seen as new, not as closed, so it waits out "
             "settle_seconds (2 s) of quiet before it is taken (the inotify close event skips "
             "that wait); naive takes whatever it sees, half-written or not.")
    return Section(NAME, "Arrival latency (one file at a time, idle daemon)", setup, [t],
                   [verdict], notes=notes, ok=ok)
