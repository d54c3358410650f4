"""The parts every scenario shares: the emulator and the daemon as real processes, /proc
accounting, scratch folders and test audio. A deployment's folders and config, and waiting for a
state, come from :mod:`tests.support`, which the tests use too.

Everything runs on 127.0.0.1. The emulator runs in a process of its own (``python -m
mimo_watchd.emulator``) so that neither the daemon nor a baseline shares its interpreter lock;
its calls are read back over its control routes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mimo_watchd.emulator import tones
from tests.support import Deployment as Deployment
from tests.support import wait_for as wait_for

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-bench-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")
V = tones.WORDS


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child: the repository importable, the bench key, no proxy."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MIMO_API_KEY": API_KEY, **extra}
    env.pop("MIMO_BASE_URL", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# --- /proc accounting ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system, all threads) and memory of one process at one moment."""

    at: float
    cpu: float
    rss_mb: float
    peak_rss_mb: float


def proc_sample(pid: int) -> ProcSample:
    """Reads ``/proc/PID/stat`` and ``/proc/PID/status``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    mem: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                mem[key] = int(value.split()[0]) / 1024
    return ProcSample(time.monotonic(), cpu, mem.get("VmRSS", 0.0), mem.get("VmHWM", 0.0))


# --- the emulator ----------------------------------------------------------------------------


class EmulatorProc:
    """``python -m mimo_watchd.emulator`` on an ephemeral loopback port."""

    def __init__(self, *, latency_scale: float = 0.0, rpm: int | None = None,
                 tpm: int | None = None, tpm_counts: str = "total", faults: Sequence[str] = (),
                 fault_rates: dict[str, float] | None = None, seed: int | None = None,
                 slow_seconds: float = 5.0, log: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "mimo_watchd.emulator", "--port", "0",
               "--latency-scale", str(latency_scale), "--rpm", str(rpm or 0),
               "--tpm", str(tpm or 0), "--tpm-counts", tpm_counts,
               "--slow-seconds", str(slow_seconds)]
        for fault in faults:
            cmd += ["--fault", fault]
        for kind, p in (fault_rates or {}).items():
            cmd += ["--fault-rate", f"{kind}={p}"]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        self.latency_scale = latency_scale
        self._err = open(log, "wb") if log else None  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=self._err or subprocess.DEVNULL, env=child_env(),
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"emulator did not start (printed {line!r})")
        self.url = line
        self.root = line.rsplit("/", 1)[0]
        self._http = httpx.Client(timeout=120.0, trust_env=False)

    def model_latency(self, seconds: float) -> float:
        """The emulator's own answer delay for ``seconds`` of audio (its latency model)."""
        return self.latency_scale * (0.3 + 0.03 * seconds)

    def calls(self) -> list[dict[str, Any]]:
        """Every API call so far (``CallRecord.to_dict`` form)."""
        resp = self._http.get(self.root + "/_emulator/calls")
        resp.raise_for_status()
        calls: list[dict[str, Any]] = resp.json()
        return calls

    def sample(self) -> ProcSample:
        return proc_sample(self.proc.pid)

    def stop(self) -> None:
        terminate(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if hasattr(self, "_http"):
            self._http.close()
        if self._err is not None:
            self._err.close()

    def __enter__(self) -> EmulatorProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()



# --- the daemon ------------------------------------------------------------------------------


def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 15 s: a child never outlives its benchmark."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class DaemonProc:
    """``python -m mimo_watchd run -c CONFIG`` as a child process, its log in a file."""

    def __init__(self, dep: Deployment, *, once: bool = False) -> None:
        self.dep = dep
        self.log_path = dep.root / f"daemon-{time.monotonic_ns()}.log"
        with contextlib.suppress(FileNotFoundError):
            (dep.state / "status.json").unlink()
        cmd = [sys.executable, "-m", "mimo_watchd", "run", "-c", str(dep.config)]
        if once:
            cmd.append("--once")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=child_env(), cwd=dep.root)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Waits until the watches are up and the initial scan is done (status.json exists)."""
        status = self.dep.state / "status.json"
        wait_for(lambda: status.exists() or self.proc.poll() is not None, timeout,
                 "the daemon to start", interval=0.01)
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.text()[-2000:]}")
        return time.monotonic() - self.started

    def sample(self) -> ProcSample:
        return proc_sample(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None:
                self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(30)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            if f'"{name}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out


class ScriptProc:
    """A baseline script (``bench/naive.py``, ``python -m bench.floor``) as a child process."""

    def __init__(self, args: Sequence[str], *, log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        self.log_path = log
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=child_env(), cwd=REPO)

    def sample(self) -> ProcSample:
        return proc_sample(self.proc.pid)

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code


# --- scratch space and audio -----------------------------------------------------------------


@contextlib.contextmanager
def scratch(base: Path | None, name: str, *, keep: bool = False) -> Iterator[Path]:
    """A fresh folder for one scenario, removed afterwards unless ``keep``."""
    parent = base or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"mimo-bench-{name}-", dir=parent))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def words_for(i: int, n: int = 5) -> list[str]:
    """``n`` tone words unique to ``i``: the first three spell ``i`` in base 40, the rest are
    drawn by a generator seeded with ``i`` (never one word twice in a row).

    The rest must not be a shared cycle: two long inputs whose tails were the same sequence
    (shifted) could end in byte-identical chunks, one content the soak then counts as paid twice.
    """
    base = len(V)
    words = [V[i % base], V[(i // base) % base], V[(i // base ** 2) % base]]
    rng = random.Random(i)
    while len(words) < n:
        word = V[rng.randrange(base)]
        if word != words[-1]:
            words.append(word)
    return words[:n]


def words_for_seconds(i: int, seconds: float) -> list[str]:
    """Unique words filling about ``seconds`` of audio at 0.3 s words and 0.2 s gaps."""
    return words_for(i, max(3, round((seconds - 0.1) / 0.5)))


def make_audio(path: Path, i: int, seconds: float, fmt: str = "wav") -> list[str]:
    """Writes unique tone audio of about ``seconds``; returns its words."""
    words = words_for_seconds(i, seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    tones.write(path, words, fmt)
    return words


def tiny_wav(i: int, seconds: float = 0.25) -> bytes:
    """A small valid 16 kHz mono wav whose first samples spell ``i`` (unique content, cheap)."""
    pcm = np.zeros(int(16000 * seconds), dtype=np.int16)
    pcm[:4] = np.frombuffer(int(i).to_bytes(8, "little"), dtype=np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def link_tree(src: Path, dst: Path) -> list[Path]:
    """Hard-links every file of ``src`` into ``dst`` (same layout); returns the new paths."""
    out = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
        out.append(target)
    return out


def drop_all(staged: Path, inbox: Path) -> float:
    """Renames every entry of ``staged`` into ``inbox`` (one rename each, as ``mv`` would);
    returns the monotonic time when the last rename was done."""
    for entry in sorted(staged.iterdir()):
        os.rename(entry, inbox / entry.name)
    return time.monotonic()


def count_files(folder: Path, suffix: str) -> int:
    """Files ending in ``suffix`` anywhere below ``folder``."""
    n = 0
    for _root, _dirs, files in os.walk(folder):
        n += sum(1 for f in files if f.endswith(suffix))
    return n


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0..100) by linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
