"""Idle cost: what a daemon that has processed 10,000 files in 200 folders costs doing nothing.

"10,000 processed files in 200 folders" is taken as the state a real deployment reaches: 10,000
files dropped into 200 sub-folders of the inbox and processed by the daemon itself, so the
ledger holds 10,000 DONE jobs, the processed tree holds the 10,000 recordings and their 20,000
sidecars in 200 folders, and the inbox keeps its 200 (now empty) folders, all watched. The
daemon is then restarted and left idle; CPU and RSS are measured over the idle period.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

from bench.harness import (
    DaemonProc,
    Deployment,
    EmulatorProc,
    ProcSample,
    child_env,
    proc_sample,
    scratch,
    tiny_wav,
)
from bench.report import Section, Table
from bench.scenarios.common import idle_sample, start_naive

NAME = "idle"
WARMUP = 5.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--folders", type=int, default=200)
    p.add_argument("--seconds-idle", type=float, default=60.0)


def _measure(sample: Callable[[], ProcSample], seconds: float) -> tuple[float, float]:
    first = sample()
    time.sleep(seconds)
    return idle_sample(first, sample())


def run(args: argparse.Namespace) -> Section:
    n, folders, secs = args.files, args.folders, args.seconds_idle
    results: dict[str, tuple[float, float]] = {}
    with scratch(args.scratch, NAME) as root:
        dep = Deployment(root / "deploy")
        for i in range(n):
            folder = dep.inbox / f"d{i % folders:03d}"
            folder.mkdir(exist_ok=True)
            (folder / f"f{i:05d}.wav").write_bytes(tiny_wav(i))
        with EmulatorProc() as emu:
            dep.write_config(emu.url, concurrency=4)
            started = time.monotonic()
            once = DaemonProc(dep, once=True)
            code = once.wait(7200)
            built = time.monotonic() - started
            counts = dep.ledger_counts()
            for label, watch in (("daemon (inotify)", {}), ("daemon (polling)",
                                                           {"polling": True})):
                dep.write_config(emu.url, concurrency=4, watch=watch)
                daemon = DaemonProc(dep)
                try:
                    daemon.wait_ready(600)
                    time.sleep(WARMUP)
                    results[label] = _measure(daemon.sample, secs)
                finally:
                    daemon.stop()
            naive = start_naive(emu, dep, 5.0)  # the same inbox: 200 empty folders
            try:
                time.sleep(WARMUP)
                results["naive"] = _measure(naive.sample, secs)
            finally:
                naive.stop()
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                   env=child_env())
        try:
            time.sleep(1.0)
            results["floor"] = _measure(lambda: proc_sample(sleeper.pid), secs)
        finally:
            sleeper.kill()
            sleeper.wait()
    t = Table(["metric", *results, "daemon inotify ÷ naive"])
    cpu = [v[0] for v in results.values()]
    rss = [v[1] for v in results.values()]
    t.add("CPU % of one core", *cpu, f"{cpu[0] / cpu[2]:.2f}" if cpu[2] else "-")
    t.add("RSS MB", *rss, f"{rss[0] / rss[2]:.2f}")
    setup = (f"{n:,} files (0.25 s wav) dropped into {folders} sub-folders of the inbox and "
             f"processed by the daemon (`run --once`, exit {code}, {built:.0f} s; ledger "
             f"{counts}). Then the daemon was restarted and left idle: {WARMUP:g} s to settle, "
             f"then {secs:g} s measured (CPU from /proc/PID/stat, RSS = VmRSS at the end). "
             "Defaults otherwise: polling every 5 s, rescan every 300 s. Naive polls the same "
             "inbox every 5 s; floor: a Python interpreter that only sleeps.")
    return Section(NAME, f"Idle cost ({n:,} processed files in {folders} folders)", setup, [t])
