"""The run clock: it follows monotonic time while the process runs, and a stop (no tick for a
long while) counts as one step only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mimo_watchd.runclock import RunClock

REPO = Path(__file__).resolve().parent.parent


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_follows_time_while_ticking() -> None:
    """Ticks every tenth of a second: the clock moves with monotonic time."""
    mono = FakeMonotonic()
    clock = RunClock(max_step=1.0, monotonic=mono)
    start = clock.now()
    for _ in range(50):
        mono.now += 0.1
        clock.advance()
    assert abs(clock.now() - start - 5.0) < 1e-9


def test_a_stop_counts_as_one_step() -> None:
    """120 s without a tick (the process stopped) moves the clock by max_step only, whether it
    is read before or after the first tick that follows."""
    mono = FakeMonotonic()
    clock = RunClock(max_step=1.0, monotonic=mono)
    start = clock.now()
    mono.now += 120.0
    assert clock.now() - start == 1.0
    clock.advance()
    assert clock.now() - start == 1.0
    mono.now += 0.25
    assert clock.now() - start == 1.25


def test_it_never_goes_back() -> None:
    """Reads across ticks never decrease."""
    mono = FakeMonotonic()
    clock = RunClock(max_step=0.5, monotonic=mono)
    seen = []
    for step in (0.1, 0.7, 0.2, 3.0, 0.05):
        mono.now += step
        seen.append(clock.now())
        clock.advance()
        seen.append(clock.now())
    assert seen == sorted(seen)


def test_a_real_sigstop_is_left_out() -> None:
    """A child process holding the clock, stopped for 3 s by SIGSTOP, measures about a second
    of run time across the stop, while monotonic time measures the 3 s."""
    code = (
        "import sys, time\n"
        "from mimo_watchd.runclock import RunClock\n"
        "clock = RunClock(tick=0.05, max_step=0.2)\n"
        "with clock:\n"
        "    r0, m0 = clock.now(), time.monotonic()\n"
        "    print('ready', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    print(round(clock.now() - r0, 2), round(time.monotonic() - m0, 2), flush=True)\n")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            assert child.stdout.readline().strip() == "ready"
            child.send_signal(signal.SIGSTOP)
            time.sleep(3.0)  # how long the process stays stopped
            child.send_signal(signal.SIGCONT)
            child.stdin.write("go\n")
            child.stdin.flush()
            run, wall = (float(x) for x in child.stdout.readline().split())
        finally:
            child.kill()
    assert wall >= 3.0 and run < 1.5, (run, wall)
