"""Fleet soak: three daemons on one inbox and one PostgreSQL ledger, one of them killed or frozen.

For ``--minutes``, the soak's random arrivals (formats, lengths, protocols, a few broken files)
land in one inbox watched by three daemons (own state folders; processed and failed folders
shared; ``ledger.backend: postgres``, ``lease_seconds`` ``LEASE``) while the emulator injects
~20 % faults. Every 10-40 s one daemon, chosen at random, is killed with SIGKILL (and started
again) or frozen with SIGSTOP for longer than its lease (and then woken): its files must be
taken over by the others, and nothing it does after waking may show. Then the daemons stop, one
drains what is left (``run --once``), and the invariants are checked: every input in processed
or failed exactly once with valid sidecars, nothing left in the inbox or the queue, one finished
job per file where the file is, no daemon died unasked, and every content paid more than once
explained by one of the two documented windows (a kill -9 between an answer and its journal
entry; a freeze longer than the lease with a request in flight).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.harness import DaemonProc, Deployment, EmulatorProc, scratch
from bench.report import command_line, machine, write_section
from bench.scenarios.fleet import fleet_database
from bench.soak import FAULTS, MAX_CHUNK, SLOW_SECONDS, TIMEOUT_BASE, TIMEOUT_PER_SECOND, Soak
from bench.soak_checks import Input, _audio_files, _report, _sha, _sidecar_problems

HOSTS = 3
LEASE = 8.0
CHAOS_EVERY = (10.0, 40.0)
SLACK = 2.0  # seconds around an answer in which a kill or a freeze explains a repayment


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=None, help="default: random, printed")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")


class FleetSoak(Soak):
    """The soak's arrivals into one shared inbox, three daemons, and the fleet's chaos."""

    def __init__(self, root: Path, emu: EmulatorProc, rng: random.Random, dsn: str) -> None:
        # Not Soak.__init__: that starts one daemon of its own; the arrivals need only these.
        self.root, self.emu, self.rng, self.dsn = root, emu, rng, dsn
        self.share = Deployment(root / "share")
        self.dep = self.share  # where the arrivals go
        self.staging = root / "staging"
        self.staging.mkdir()
        self.inputs: list[Input] = []
        self.kills: list[float] = []  # time.time() of every SIGKILL
        self.freezes: list[tuple[float, float]] = []  # (SIGSTOP, SIGCONT), time.time()
        self.crashes: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.rsync = shutil.which("rsync") is not None
        self.members = [self._member(i) for i in range(HOSTS)]
        self.daemons = [self._start(m) for m in self.members]

    def _member(self, i: int) -> Deployment:
        dep = Deployment(self.root / f"host{i}")
        dep.inbox, dep.processed, dep.failed = (self.share.inbox, self.share.processed,
                                                self.share.failed)
        dep.write_config(
            self.emu.url, concurrency=3,
            api={"max_retries": 2, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0,
                 "timeout_base_seconds": TIMEOUT_BASE,
                 "timeout_per_audio_second": TIMEOUT_PER_SECOND},
            audio={"max_chunk_seconds": MAX_CHUNK}, watch={"settle_seconds": 0.5},
            retry_delay_seconds=1.0, max_attempts=8, incomplete_timeout_seconds=5.0,
            pause_probe_seconds=1.0, max_interruptions=20, shutdown_timeout_seconds=60.0,
            rescan_interval_seconds=20.0,
            ledger={"backend": "postgres", "host_id": f"host{i}", "lease_seconds": LEASE})
        return dep

    def _start(self, dep: Deployment, *, once: bool = False) -> DaemonProc:
        os.environ["MIMO_WATCHD_DSN"] = self.dsn  # the children's environment
        return DaemonProc(dep, once=once)

    def chaos(self, until: float) -> None:
        """Every 10-40 s: kill -9 one daemon (and restart it), or freeze one past its lease."""
        next_at = time.monotonic() + self.rng.uniform(*CHAOS_EVERY)
        while not self.stop.wait(0.05) and time.monotonic() < until:
            for i, d in enumerate(self.daemons):
                if not d.alive():
                    self.crashes.append(d.text()[-3000:])
                    self.daemons[i] = self._start(self.members[i])
            if time.monotonic() < next_at:
                continue
            i = self.rng.randrange(HOSTS)
            victim = self.daemons[i]
            if self.rng.random() < 0.5:
                victim.signal(signal.SIGKILL)
                self.kills.append(time.time())
                victim.wait(30)
                self.daemons[i] = self._start(self.members[i])
            else:
                frozen = time.time()
                victim.signal(signal.SIGSTOP)
                self.stop.wait(LEASE + self.rng.uniform(2.0, 6.0))
                victim.signal(signal.SIGCONT)
                self.freezes.append((frozen, time.time()))
            next_at = time.monotonic() + self.rng.uniform(*CHAOS_EVERY)

    def drain(self, timeout: float) -> int:
        """Stops every daemon (SIGTERM), then one drains what is left with ``run --once``."""
        for d in self.daemons:
            d.stop(timeout=90)
        return self._start(self.members[0], once=True).wait(timeout)


def _rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        return [tuple(os.fsdecode(v) if isinstance(v, bytes) else v for v in row)
                for row in db.execute(sql).fetchall()]


def check(soak: FleetSoak, calls: list[dict[str, Any]], drain_code: int,
          out: list[str]) -> bool:
    """Checks and prints every invariant (lines also go to ``out``); True when all hold."""
    share, inputs = soak.share, soak.inputs
    audio = _audio_files(share.processed) + _audio_files(share.failed)
    by_sha: dict[str, list[Path]] = defaultdict(list)
    for path in audio:
        by_sha[_sha(path)].append(path)
    results = []
    problems = [f"{i.name}: found {len(by_sha.get(i.sha256, []))} times" for i in inputs
                if len(by_sha.get(i.sha256, [])) != 1]
    known = {i.sha256 for i in inputs}
    problems += [f"audio that is no input: {p}" for s, ps in by_sha.items() if s not in known
                 for p in ps]
    where = {i.name: by_sha[i.sha256][0] for i in inputs if len(by_sha.get(i.sha256, [])) == 1}
    done = sum(1 for p in where.values() if share.processed in p.parents)
    results.append(_report("every input is in processed or failed exactly once", problems,
                           f"{len(inputs)} inputs: {done} processed, {len(where) - done} "
                           "failed", out))
    problems = [p for i in inputs if i.name in where
                for p in _sidecar_problems(i, where[i.name], share)]
    problems += [f"{i.name}: well-formed but failed" for i in inputs
                 if i.words is not None and i.name in where
                 and share.processed not in where[i.name].parents]
    sidecars = list(share.processed.rglob("*.json"))
    extra = len(sidecars) - done
    if extra:
        problems.append(f"{extra} JSON sidecars more than transcribed files")
    results.append(_report("each with valid sidecars (none twice) or an error file", problems,
                           f"{len(sidecars)} JSON sidecars", out))
    leftovers = [str(p) for folder in (soak.root / "share", *(m.root for m in soak.members))
                 for p in folder.rglob("*") if p.is_file() and (
                     p.name.startswith(".mimo-watchd-") or p.name.endswith((".tmp", ".part"))
                     or share.inbox in p.parents)]
    results.append(_report("no temp files left and the inbox is empty", leftovers,
                           f"{len(leftovers)} found", out))
    results.append(_check_jobs(soak, where, out))
    results.append(_check_payments(soak, calls, out))
    problems = [f"crash: ...{tail[-600:]}" for tail in soak.crashes]
    if drain_code not in (0, 1):
        problems.append(f"final run --once exited {drain_code}")
    results.append(_report("no daemon died unasked; the final drain finished", problems,
                           f"{len(soak.crashes)} crashes, drain exit {drain_code}", out))
    return all(results)


def _check_jobs(soak: FleetSoak, where: dict[str, Path], out: list[str]) -> bool:
    """One finished job per file (besides ``elsewhere`` ones pointing at it), where it is."""
    rows = _rows(soak.dsn, "SELECT path, state, final_path, outcome FROM mw_jobs")
    states = Counter(r[1] for r in rows)
    problems = [f"job still {state}: {path}" for path, state, _f, _o in rows
                if state in ("QUEUED", "PROCESSING")]
    finals: Counter[str] = Counter(f for _p, s, f, o in rows
                                   if s in ("DONE", "FAILED") and f and o != "elsewhere")
    problems += [f"{f}: {n} finished jobs" for f, n in finals.items() if n > 1]
    problems += [f"{name}: no finished job at {path}" for name, path in where.items()
                 if str(path) not in finals]
    false = [f"{p}: {o}" for p, s, _f, o in rows if s == "FAILED" and o == "vanished"]
    problems += [f"a failure that is none: {x}" for x in false]
    elsewhere = sum(1 for r in rows if r[3] == "elsewhere")
    return _report("the shared ledger agrees with the folders; no false failures", problems,
                   f"{len(rows)} jobs {dict(states)} ({elsewhere} ended 'elsewhere')", out)


def _check_payments(soak: FleetSoak, calls: list[dict[str, Any]], out: list[str]) -> bool:
    """Every content answered ok more than once is explained by a kill -9 while its earlier
    answer was on its way to the journal, or a freeze longer than the lease around it."""
    ok = [c for c in calls if c.get("ok") and c.get("audio_sha256")]
    by_sha: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in ok:
        by_sha[c["audio_sha256"]].append(c)
    causes: Counter[str] = Counter()
    problems = []
    for sha, group in by_sha.items():
        group.sort(key=lambda c: c["time"])
        for prev in group[:-1]:
            end = prev["time"] + 0.5 * (0.3 + 0.03 * (prev.get("duration") or 0))
            if any(prev["time"] - SLACK <= k <= end + SLACK for k in soak.kills):
                causes["kill -9 between answer and journal"] += 1
            elif any(a - SLACK <= prev["time"] <= b + SLACK or a <= end <= b
                     for a, b in soak.freezes):
                causes["freeze longer than the lease with a request in flight"] += 1
            else:
                problems.append(f"chunk {sha[:12]} answered ok {len(group)} times, at "
                                + ", ".join(f"{c['time']:.1f}" for c in group))
    statuses = Counter(c.get("status") for c in calls)
    return _report("every repayment explained by a documented window", problems,
                   f"{len(calls)} calls, {len(ok)} ok, {len(by_sha)} distinct chunks; statuses "
                   f"{dict(statuses)}; repayments {dict(causes) or 0}", out)


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"fleet soak: {args.minutes:g} minutes, seed {seed}", flush=True)
    with scratch(args.scratch, "fleet-soak", keep=True) as root, fleet_database() as dsn, \
            EmulatorProc(latency_scale=0.5, fault_rates=FAULTS, seed=seed,
                         slow_seconds=SLOW_SECONDS, log=root / "emulator.log") as emu:
        soak = FleetSoak(root, emu, rng, dsn)
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
        summary = (f"{len(soak.inputs)} inputs, {len(soak.kills)} kill -9, "
                   f"{len(soak.freezes)} freezes past the lease, {len(calls)} API calls; final "
                   f"drain (run --once) exit {code} in {drained:.0f} s")
        print(f"fleet soak: {summary}", flush=True)
        lines: list[str] = []
        ok = check(soak, calls, code, lines)
        if args.write:
            _write(args, seed, summary, lines, ok)
        if args.keep or not ok:
            print(f"fleet soak: scratch kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def _write(args: argparse.Namespace, seed: int, summary: str, lines: list[str], ok: bool
           ) -> None:
    argv = ["fleet-soak", "--minutes", f"{args.minutes:g}", "--seed", str(seed)]
    write_section("fleet-soak", "\n".join([
        "## Fleet soak (3 daemons, one PostgreSQL, kill -9 and SIGSTOP past the lease)", "",
        f"`{command_line(argv)}` - {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} - "
        f"{machine()}", "",
        f"The soak's random arrivals into one inbox watched by {HOSTS} daemons (own state "
        f"folders, shared processed and failed folders, one PostgreSQL ledger, lease_seconds "
        f"{LEASE:g}); the emulator injecting {sum(FAULTS.values()):.0%} faults; every "
        f"{CHAOS_EVERY[0]:g}-{CHAOS_EVERY[1]:g} s one daemon killed with SIGKILL (restarted) "
        "or frozen with SIGSTOP for 2-6 s longer than its lease (woken); then every daemon "
        "stops, one drains with `run --once`, and the invariants are checked.", "",
        summary, "", "```", *lines, "```", "",
        f"Result: {'all invariants hold' if ok else 'AN INVARIANT FAILED'}."]))
