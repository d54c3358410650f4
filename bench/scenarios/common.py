"""Running the baselines and the daemon the same way in every scenario."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    DaemonProc,
    Deployment,
    EmulatorProc,
    ProcSample,
    ScriptProc,
    count_files,
    drop_all,
    wait_for,
)


@dataclass(frozen=True)
class Run:
    """What one client (daemon, naive) did with one batch of files."""

    wall: float
    cpu: float
    peak_rss_mb: float
    emulator_cpu: float
    done: int
    failed: int = 0


def run_floor(emu: EmulatorProc, bodies: Path, concurrency: int, out: Path,
              retry_429: float = 0.5, timeout: float = 3600.0) -> dict[str, Any]:
    """``python -m bench.floor post`` against ``emu``; its JSON figures plus emulator CPU."""
    e0 = emu.sample()
    proc = ScriptProc(["-m", "bench.floor", "post", "--url", emu.url, "--bodies", str(bodies),
                       "--concurrency", str(concurrency), "--retry-429", str(retry_429),
                       "--out", str(out)], log=out.with_suffix(".log"))
    code = proc.wait(timeout)
    if code != 0:
        raise RuntimeError(f"floor failed: {out.with_suffix('.log').read_text()[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["emulator_cpu"] = emu.sample().cpu - e0.cpu
    return result


def run_daemon_batch(emu: EmulatorProc, dep: Deployment, staged: Path, n: int, *,
                     timeout: float = 3600.0,
                     done: Callable[[], tuple[int, int]] | None = None) -> Run:
    """Starts the daemon idle, drops ``staged`` into its inbox, waits for ``n`` finished jobs
    (``done()``: jobs done and failed, by default read from its SQLite ledger)."""
    def sqlite_done() -> tuple[int, int]:
        counts = dep.ledger_counts()
        return counts.get("DONE", 0), counts.get("FAILED", 0)

    finished = done or sqlite_done
    daemon = DaemonProc(dep)
    try:
        daemon.wait_ready()
        s0, e0 = daemon.sample(), emu.sample()
        drop_all(staged, dep.inbox)
        wait_for(lambda: sum(finished()) >= n or not daemon.alive(), timeout,
                 f"{n} files processed by the daemon", interval=0.1)
        wall = time.monotonic() - s0.at
        s1, e1 = daemon.sample(), emu.sample()
    finally:
        daemon.stop()
    ok, failed = finished()
    return Run(wall=wall, cpu=s1.cpu - s0.cpu, peak_rss_mb=s1.peak_rss_mb,
               emulator_cpu=e1.cpu - e0.cpu, done=ok, failed=failed)


def start_naive(emu: EmulatorProc, dep: Deployment, interval: float) -> ScriptProc:
    return ScriptProc([str(REPO / "bench" / "naive.py"), str(dep.inbox), str(dep.processed),
                       "--url", emu.url, "--interval", str(interval)],
                      log=dep.root / "naive.log")


def run_naive_batch(emu: EmulatorProc, dep: Deployment, staged: Path, n: int, *,
                    interval: float = 1.0, timeout: float = 3600.0) -> Run:
    """The naive script, idle, then ``staged`` dropped in; waits for ``n`` transcripts."""
    naive = start_naive(emu, dep, interval)
    try:
        time.sleep(0.5)  # its imports; it then polls an empty folder
        s0, e0 = naive.sample(), emu.sample()
        drop_all(staged, dep.inbox)
        wait_for(lambda: count_files(dep.processed, ".txt") >= n or naive.proc.poll() is not None,
                 timeout, f"{n} files processed by the naive script", interval=0.1)
        wall = time.monotonic() - s0.at
        s1, e1 = naive.sample(), emu.sample()
    finally:
        naive.stop()
    return Run(wall=wall, cpu=s1.cpu - s0.cpu, peak_rss_mb=s1.peak_rss_mb,
               emulator_cpu=e1.cpu - e0.cpu, done=count_files(dep.processed, ".txt"))


def idle_sample(first: ProcSample, last: ProcSample) -> tuple[float, float]:
    """CPU % of one core between two samples, and the RSS at the last."""
    return 100 * (last.cpu - first.cpu) / (last.at - first.at), last.rss_mb
