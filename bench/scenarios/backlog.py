"""Backlog: 100,000 files already in the inbox when the daemon starts.

Measured: the time until every file is a QUEUED job in the ledger (the daemon has scanned,
settled, probed and hashed each one), and the peak RSS. Nothing is transcribed meanwhile: the
emulator answers every request with 402 (insufficient balance), which pauses the daemon after its
first request, so the figure is intake alone.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.harness import (
    DaemonProc,
    Deployment,
    EmulatorProc,
    ScriptProc,
    scratch,
    tiny_wav,
    wait_for,
)
from bench.report import Section, Table, ratio
from bench.scenarios.common import start_naive

NAME = "backlog"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=100_000)


def _first_call(emu: EmulatorProc) -> float | None:
    calls = emu.calls()
    return min(c["time"] for c in calls) if calls else None


def run(args: argparse.Namespace) -> Section:
    n = args.files
    with scratch(args.scratch, NAME) as root:
        dep = Deployment(root / "deploy")
        for i in range(n):
            (dep.inbox / f"b{i:06d}.wav").write_bytes(tiny_wav(i))
        walk = root / "floor.json"
        floor_proc = ScriptProc(["-m", "bench.floor", "hash-walk", "--root", str(dep.inbox),
                                 "--out", str(walk)], log=root / "floor.log")
        floor_proc.wait(3600)
        floor = json.loads(walk.read_text())
        with EmulatorProc(faults=["402:*"]) as emu:
            dep.write_config(emu.url)
            wall0 = time.time()
            daemon = DaemonProc(dep)
            try:
                wait_for(lambda: sum(dep.ledger_counts().values()) >= n or not daemon.alive(),
                         3600, f"{n} jobs queued", interval=0.5)
                queued = time.monotonic() - daemon.started
                sample = daemon.sample()
                counts = dep.ledger_counts()
            finally:
                daemon.stop()
            first = _first_call(emu)
            d_first = first - wall0 if first is not None else None
        with EmulatorProc(faults=["402:*"]) as emu:
            wall0 = time.time()
            naive = start_naive(emu, dep, 5.0)
            try:
                first = wait_for(lambda: _first_call(emu), 600, "naive's first request",
                                 interval=0.2)
                n_first = first - wall0
                time.sleep(5.0)
                n_rss = naive.sample().peak_rss_mb
            finally:
                naive.stop()
    t = Table(["metric", "daemon", "naive", "floor", "daemon ÷ floor"])
    t.add("s until all files queued", queued, "-", floor["wall"], ratio(queued, floor["wall"]))
    t.add("files/s queued", n / queued, "-", n / floor["wall"], ratio(floor["wall"], queued))
    t.add("s until the first request", d_first, n_first, "-", "")
    t.add("peak RSS MB", sample.peak_rss_mb, n_rss, floor["peak_rss_mb"],
          ratio(sample.peak_rss_mb, floor["peak_rss_mb"]))
    t.add("CPU s (whole process)", sample.cpu, "-", floor["cpu"], ratio(sample.cpu, floor["cpu"]))
    setup = (f"{n:,} small wav files (0.25 s, 8 KB, unique content) in one flat inbox folder "
             "before the daemon starts (defaults, max_concurrency 3); the clock runs from the "
             "process start (imports included) until the ledger holds a job for every file "
             f"(ledger at that moment: {counts}). The emulator answers 402, so the daemon pauses "
             "after its first request and the figure is intake alone. Naive has no queue: its "
             "figure is the time to its first request (it lists the folder first) and its peak "
             "RSS 5 s later. Floor: one process walking the folder and reading (sha256) every "
             "file once, the least any content-keyed queue must do.")
    return Section(NAME, f"Backlog ({n:,} files present at start)", setup, [t])
