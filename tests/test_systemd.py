"""The shipped systemd unit: it verifies cleanly, is well sandboxed, and fits the daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mimo_watchd.config import CREDENTIAL_NAME, SCHEMA

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "mimo-watchd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (all sections), values in order of appearance."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture
def installable(tmp_path: Path) -> Path:
    """A copy of the unit whose programs exist on this machine (verify checks them)."""
    text = UNIT.read_text()
    true = shutil.which("true") or "/bin/true"
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={true}", text, flags=re.M)
    if not Path("/bin/kill").exists():
        text = text.replace("ExecReload=/bin/kill", f"ExecReload={shutil.which('kill')}")
    path = tmp_path / UNIT.name
    path.write_text(text)
    return path


@needs_analyze
def test_unit_verifies_cleanly(installable: Path) -> None:
    """systemd-analyze verify accepts the unit without a single complaint."""
    assert ANALYZE is not None
    r = subprocess.run([ANALYZE, "verify", "--man=no", str(installable)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")


@needs_analyze
def test_unit_exposure_is_low(installable: Path) -> None:
    """systemd-analyze security rates the sandbox at an exposure of 2.0 or lower."""
    assert ANALYZE is not None
    r = subprocess.run([ANALYZE, "security", "--offline=true", str(installable)],
                       capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert match, r.stdout + r.stderr
    assert float(match.group(1)) <= 2.0, r.stdout


def test_unit_matches_the_daemon() -> None:
    """Notify type, exit 78, the venv's program, the credential name and the stop timeout
    agree with the code and the README."""
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["RestartPreventExitStatus"] == ["78"]
    # The venv the README installs into (a venv install has no /usr/local/bin/mimo-watchd).
    assert d["ExecStart"][0].split() == ["/opt/mimo-watchd/venv/bin/mimo-watchd", "run", "-c",
                                         "/etc/mimo-watchd/config.yaml"]
    assert d["LoadCredential"][0].split(":")[0] == CREDENTIAL_NAME
    assert int(d["WatchdogSec"][0]) >= 10
    # systemd must wait longer than the daemon's own drain of in-flight requests.
    assert int(d["TimeoutStopSec"][0]) > SCHEMA["shutdown_timeout_seconds"].default
    assert d["CapabilityBoundingSet"] == [""] and d["ProtectSystem"] == ["strict"]


# What the daemon does natively, run by the sandbox tests below: PyAV/FFmpeg, numpy/OpenBLAS,
# TLS, SQLite WAL, inotify, a file lease, moves, hook processes, the metrics HTTP server,
# sd_notify and the instance lock (flock), partly through our own modules. With "mdwe" it first
# turns on the kernel's W^X.
NATIVE_STACK = r"""
import ctypes, errno, fcntl, io, os, shutil, socket, sqlite3, ssl, sys, tempfile
if "mdwe" in sys.argv:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77 if ctypes.get_errno() == errno.EINVAL else 1)
import av, httpx, numpy as np
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from mimo_watchd.config import HookSettings
from mimo_watchd.hooks import HookRunner
from mimo_watchd.metrics import Metrics, serve
from mimo_watchd.notify import Notifier

buf = io.BytesIO()
with av.open(buf, "w", format="mp3") as out:
    stream = out.add_stream("mp3", rate=16000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate = 16000
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        out.mux(packet)
buf.seek(0)
with av.open(buf) as f:
    assert sum(fr.samples for fr in f.decode(audio=0)) > 0
a = np.ones((300, 300))
assert (a @ a)[0, 0] == 300
ssl.create_default_context()
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(1) == 2
with tempfile.TemporaryDirectory() as d:
    sqlite3.connect(os.path.join(d, "ledger.db")).execute("pragma journal_mode=wal").close()
    seen = []
    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            seen.append(event)
    observer = Observer()
    observer.schedule(Handler(), d)
    observer.start()
    audio = os.path.join(d, "a.mp3")
    with open(audio, "wb") as f:
        f.write(buf.getvalue())
    with open(audio, "rb") as f:
        fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    os.rename(audio, audio + ".moved")
    shutil.copy2(audio + ".moved", audio)
    observer.stop()
    observer.join()
    runner = HookRunner()
    runner.submit(HookSettings(command=("sh", "-c", "exit 0"), timeout_seconds=10.0, retries=0),
                  "done", {}, {})
    assert runner.close(10)
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(os.path.join(d, "notify"))
    assert Notifier.from_env({"NOTIFY_SOCKET": os.path.join(d, "notify")}).ready()
    rx.close()
    with serve("127.0.0.1:0", Metrics(), lambda: (True, "")) as server:
        assert httpx.get(server.url + "/metrics").status_code == 200
    from pathlib import Path
    from mimo_watchd.instance import InstanceLock, holder
    lock = InstanceLock.acquire(Path(d) / "state")
    assert holder(Path(d) / "state") == os.getpid()
    lock.release()
"""


def run_native_stack(*prefix: str, mdwe: bool = False) -> subprocess.CompletedProcess[str]:
    args = [*prefix, sys.executable, "-c", NATIVE_STACK, *(["mdwe"] if mdwe else [])]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_native_stack_runs_without_writable_executable_memory() -> None:
    """Everything the daemon loads works under W^X memory (MemoryDenyWriteExecute=yes).

    The kernel's own MDWE (prctl, Linux 6.3+) refuses the same mappings as systemd's filter.
    """
    r = run_native_stack(mdwe=True)
    if r.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE")
    assert r.returncode == 0, r.stderr


def syscall_group(name: str, groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for entry in groups[name]:
        calls |= syscall_group(entry, groups) if entry.startswith("@") else {entry}
    return calls


@needs_analyze
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_native_stack_stays_inside_the_syscall_filter(tmp_path: Path) -> None:
    """Every system call the daemon's native stack makes is allowed by SystemCallFilter=.

    Only calls known to be harmless when refused (they fail with SystemCallErrorNumber=EPERM)
    may fall outside.
    """
    assert ANALYZE is not None
    if subprocess.run(["strace", "-o", os.devnull, "true"]).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    listing = subprocess.run([ANALYZE, "syscall-filter"], capture_output=True, text=True,
                             check=True).stdout
    groups: dict[str, list[str]] = {}
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.lstrip().startswith("#"):
            current.append(line.strip())
    d = directives(UNIT.read_text())
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    allowed = syscall_group("@system-service", groups) - syscall_group("@privileged", groups)
    allowed -= syscall_group("@resources", groups)
    summary = tmp_path / "strace.txt"
    r = run_native_stack("strace", "-f", "-qq", "-c", "-o", str(summary))
    assert r.returncode == 0, r.stderr
    used = {line.split()[-1] for line in summary.read_text().splitlines()
            if line[:1] == " " and line.split()[-1] != "total"}
    # OpenBLAS (numpy) asks mbind() for NUMA placement of its buffers and ignores a refusal.
    harmless = {"mbind"}
    if os.geteuid() == 0:
        harmless.add("fchown")  # SQLite chowns its WAL files only when run as root
    assert used - allowed <= harmless
    assert len(used) > 50  # the summary really was parsed
