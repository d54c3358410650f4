"""Soak: random arrivals, ~20 % API faults, kill -9 and SIGHUP; then check that nothing was lost.

For ``--minutes``, files of random formats and lengths (some long enough to be cut into chunks,
a few broken on purpose) arrive by random protocols (cp, rename, rsync, temp name + rename, slow
writes, into sub-folders too) while the emulator injects ~20 % faults (429, 500, 503, slow
answers the client times out on, dropped connections) and the daemon is killed with SIGKILL at
random moments and restarted, and sent SIGHUP (with a changed config) now and then. Then the
arrivals stop, the daemon drains what is left (``run --once``), and ``bench.soak_checks`` checks
the invariants. Exit status 1 when one fails (the scratch folder is kept for the post-mortem).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from bench.harness import DaemonProc, Deployment, EmulatorProc, scratch, words_for_seconds
from bench.report import command_line, machine, write_section
from bench.soak_checks import Input, check_all
from mimo_watchd.emulator import tones

FAULTS = {"429": 0.05, "500": 0.04, "503": 0.04, "slow": 0.03, "drop-headers": 0.02,
          "drop-body": 0.02}  # 20 %; "slow" answers after the client's read timeout
# The client's read timeout is TIMEOUT_BASE + TIMEOUT_PER_SECOND x chunk seconds, at most
# MAX_CHUNK seconds per chunk. A "slow" answer must come well after the longest such timeout:
# an answer that lands just as the client gives up is paid for and never read, whatever the
# client does, and a fault meant as "a timeout" that is sometimes an answer on time proves
# nothing. (The first 30-minute soak used 6 s, which crossed the timeout of ~90 s chunks.)
# Chunks stay within the emulator's quality window (120 s: past it, words are lost, as the
# model loses them), so every well-formed input can still be checked word for word.
TIMEOUT_BASE, TIMEOUT_PER_SECOND, MAX_CHUNK = 3.0, 0.05, 100.0
SLOW_SECONDS = TIMEOUT_BASE + TIMEOUT_PER_SECOND * MAX_CHUNK + 5.0
FORMATS = ["wav", "wav", "mp3", "mp3", "m4a", "ogg", "opus", "flac", "webm", "amr", "aiff"]
PROTOCOLS = ["cp", "rename", "rsync", "temp-rename", "slow-write"]
SHUTDOWN_TIMEOUT = 60.0
# Seconds between kills and between SIGHUPs. A daemon killed more often than its longest job
# takes (a chunked file: decode, encode, two requests, ~15 s on 2 loaded cores) never finishes
# that job, which proves nothing more.
KILL_EVERY = (8.0, 40.0)
HUP_EVERY = (10.0, 30.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=None, help="default: random, printed")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")


class Soak:
    """The arrivals, the chaos and the daemon of one soak run."""

    def __init__(self, root: Path, emu: EmulatorProc, rng: random.Random) -> None:
        self.root = root
        self.emu = emu
        self.rng = rng
        self.dep = Deployment(root / "deploy")
        self.staging = root / "staging"
        self.staging.mkdir()
        self.inputs: list[Input] = []
        self.kills: list[float] = []  # time.time() of every SIGKILL
        self.hups = 0
        self.restarts = 0
        self.crashes: list[str] = []  # log tails of daemons that died without being killed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.rsync = shutil.which("rsync") is not None
        self.write_config(3)
        self.daemon = DaemonProc(self.dep)

    def write_config(self, concurrency: int) -> None:
        self.dep.write_config(
            self.emu.url, concurrency=concurrency,
            api={"max_retries": 2, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0,
                 "timeout_base_seconds": TIMEOUT_BASE,
                 "timeout_per_audio_second": TIMEOUT_PER_SECOND},
            audio={"max_chunk_seconds": MAX_CHUNK},
            watch={"settle_seconds": 0.5}, retry_delay_seconds=1.0, max_attempts=8,
            incomplete_timeout_seconds=5.0, pause_probe_seconds=1.0,
            # The soak kills the daemon from outside every few seconds, far more often than
            # any deployment; the cap is for files that kill it themselves (test_daemon).
            max_interruptions=20,
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT, rescan_interval_seconds=20.0)

    # --- arrivals ----------------------------------------------------------------------------

    def make_input(self, i: int) -> tuple[Input, Path]:
        """Writes input ``i`` into the staging folder: mostly short, some chunked, some broken."""
        rng = self.rng
        fmt = rng.choice(FORMATS)
        roll = rng.random()
        seconds = rng.uniform(1, 10) if roll < 0.7 else rng.uniform(10, 90) \
            if roll < 0.95 else rng.uniform(320, 420)
        protocol = rng.choice([p for p in PROTOCOLS if p != "rsync" or self.rsync])
        sub = f"sub{rng.randrange(4)}/" if rng.random() < 0.3 else ""
        name = f"{sub}s{i:05d}-{protocol}.{fmt}"
        path = self.staging / f"{i:05d}.{fmt}"
        words: list[str] | None = words_for_seconds(i, seconds)
        tones.write(path, words or [], fmt)
        if rng.random() < 0.05:  # broken on purpose: garbage, or the first half of a file
            data = path.read_bytes()
            path.write_bytes(os.urandom(2000) if rng.random() < 0.5 else data[: len(data) // 2])
            words = None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Input(name, fmt, protocol, round(seconds, 1), words, digest), path

    def deliver(self, item: Input, src: Path) -> None:
        """Puts ``src`` into the inbox as ``item.name`` the way ``item.protocol`` does."""
        dest = self.dep.inbox / item.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if item.protocol == "cp":
            subprocess.run(["cp", str(src), str(dest)], check=True)
        elif item.protocol == "rename":
            os.rename(src, dest)
        elif item.protocol == "rsync":
            subprocess.run(["rsync", str(src), str(dest)], check=True)
        elif item.protocol == "temp-rename":
            tmp = dest.with_name(dest.name + ".part")
            self._slow_copy(src, tmp, pieces=3, pause=(0.1, 0.4))
            os.rename(tmp, dest)
        else:  # slow-write: pauses longer than settle_seconds, the file open all along
            self._slow_copy(src, dest, pieces=4, pause=(0.6, 1.5))
        src.unlink(missing_ok=True)

    def _slow_copy(self, src: Path, dest: Path, *, pieces: int, pause: tuple[float, float]
                   ) -> None:
        data = src.read_bytes()
        step = max(1, -(-len(data) // pieces))
        with open(dest, "wb") as f:
            for k in range(0, len(data), step):
                f.write(data[k : k + step])
                f.flush()
                time.sleep(self.rng.uniform(*pause))

    def arrivals(self, until: float) -> None:
        with ThreadPoolExecutor(4, thread_name_prefix="deliver") as pool:
            i = 0
            while time.monotonic() < until:
                item, src = self.make_input(i)
                with self.lock:
                    self.inputs.append(item)
                pool.submit(self.deliver, item, src).add_done_callback(_raise_later)
                i += 1
                time.sleep(self.rng.uniform(0.1, 1.5))

    # --- chaos -------------------------------------------------------------------------------

    def chaos(self, until: float) -> None:
        next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY)
        next_hup = time.monotonic() + self.rng.uniform(*HUP_EVERY)
        while not self.stop.wait(0.05) and time.monotonic() < until:
            now = time.monotonic()
            if now >= next_kill:
                self.daemon.signal(signal.SIGKILL)
                self.kills.append(time.time())
                self.daemon.wait(30)
                time.sleep(self.rng.uniform(0, 1.0))
                self.daemon = DaemonProc(self.dep)
                self.restarts += 1
                next_kill = now + self.rng.uniform(*KILL_EVERY)
            elif now >= next_hup and (self.dep.state / "status.json").exists():
                # Only once the daemon has installed its handlers: before that, SIGHUP kills.
                self.write_config(self.rng.choice([2, 3]))
                self.daemon.signal(signal.SIGHUP)
                self.hups += 1
                next_hup = now + self.rng.uniform(*HUP_EVERY)
            elif not self.daemon.alive():
                self.crashes.append(self.daemon.text()[-3000:])
                self.daemon = DaemonProc(self.dep)

    def drain(self, timeout: float) -> int:
        """Stops the running daemon (SIGTERM), then ``run --once`` until everything is finished.

        A stop that had to abandon requests still in flight at its deadline counts as a kill:
        an answer paid for then is lost like one a kill -9 interrupts."""
        deadline = time.time() + SHUTDOWN_TIMEOUT
        self.daemon.stop(timeout=SHUTDOWN_TIMEOUT + 30)
        if any(e.get("abandoned_threads") for e in self.daemon.events("daemon.stopped")):
            self.kills.append(deadline)
        once = DaemonProc(self.dep, once=True)
        return once.wait(timeout)


def _tally(inputs: list[Input]) -> str:
    protocols = Counter(i.protocol for i in inputs)
    formats = Counter(i.fmt for i in inputs)
    chunked = sum(1 for i in inputs if i.seconds > MAX_CHUNK)
    broken = sum(1 for i in inputs if i.words is None)
    return (f"by protocol {dict(protocols)}; by format {dict(formats)}; {chunked} longer than "
            f"{MAX_CHUNK:g} s (chunked); {broken} broken on purpose")


def _write(args: argparse.Namespace, seed: int, summary: str, lines: list[str], ok: bool
           ) -> None:
    argv = ["soak", "--minutes", f"{args.minutes:g}", "--seed", str(seed)]
    text = "\n".join([
        "## Soak (faults, kill -9, SIGHUP)", "",
        f"`{command_line(argv)}` - {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} - "
        f"{machine()}", "",
        "Files of random formats and lengths arriving by random protocols (chunks of <= "
        f"{MAX_CHUNK:g} s); the emulator "
        f"injecting {sum(FAULTS.values()):.0%} faults ({', '.join(FAULTS)}; slow = an answer "
        f"{SLOW_SECONDS:g} s late, after any chunk's read timeout) with its latency model at "
        "0.5; the daemon killed "
        f"with SIGKILL every {KILL_EVERY[0]:g}-{KILL_EVERY[1]:g} s and restarted, sent SIGHUP "
        f"(with a changed max_concurrency) every {HUP_EVERY[0]:g}-{HUP_EVERY[1]:g} s; then "
        "`run --once` drains what is left and the invariants are checked. A call is billed "
        "once its model ran, delivered or not (a slow answer the client gave up on, a dropped "
        "connection): repayments of such lost answers are expected, each is named by its "
        "cause, and one that nothing explains fails the run.",
        "", summary, "", "```", *lines, "```", "",
        f"Result: {'all invariants hold' if ok else 'AN INVARIANT FAILED'}."])
    write_section("soak", text)


def _raise_later(fut: Future[None]) -> None:
    exc = fut.exception()
    if exc is not None:
        print(f"soak: a delivery failed: {exc!r}", flush=True)


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"soak: {args.minutes:g} minutes, seed {seed}", flush=True)
    keep = args.keep
    with scratch(args.scratch, "soak", keep=True) as root:
        with EmulatorProc(latency_scale=0.5, fault_rates=FAULTS, seed=seed,
                          slow_seconds=SLOW_SECONDS,
                          log=root / "emulator.log") as emu:
            soak = Soak(root, emu, rng)
            until = time.monotonic() + args.minutes * 60
            chaos = threading.Thread(target=soak.chaos, args=(until,), name="chaos")
            chaos.start()
            try:
                soak.arrivals(until)
            finally:
                soak.stop.set()
                chaos.join()
            started = time.monotonic()
            code = soak.drain(timeout=900)
            drained = time.monotonic() - started
            calls = emu.calls()
            (root / "calls.json").write_text(json.dumps(calls), encoding="utf-8")
        summary = (f"{len(soak.inputs)} inputs ({_tally(soak.inputs)}), {len(soak.kills)} kill -9, "
                   f"{soak.hups} SIGHUP, {len(calls)} API calls; final drain (run --once) exit "
                   f"{code} in {drained:.0f} s")
        print(f"soak: {summary}", flush=True)
        lines: list[str] = []
        ok = check_all(soak.dep, soak.inputs, calls, soak.kills, latency_scale=0.5,
                       crashes=soak.crashes, drain_code=code, out=lines)
        if args.write:
            _write(args, seed, summary, lines, ok)
        keep = keep or not ok
        if keep:
            print(f"soak: scratch kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1
