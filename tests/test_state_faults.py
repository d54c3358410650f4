"""The daemon's own state under attack: an address in use, a corrupt, lost or full ledger.

Each through the real daemon process: it refuses to start with one line and exit 78, stops
rather than carry on without its memory, or holds what it was paid for until space returns.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess, run_cli
from tests.support import Deployment, wait_for
from tests.test_ledger_faults import fill, small_fs

pytestmark = pytest.mark.e2e
__all__ = ["small_fs"]  # a fixture, used below by name


@pytest.fixture
def layout(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path, test_timing=True)


def test_a_metrics_address_in_use_ends_the_start_with_one_line(emu: Emulator,
                                                               layout: Deployment) -> None:
    """metrics.listen on a port another program holds: exit 78 and one line naming the
    address, before anything else runs (no start logged, no ledger made)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        layout.write_config(emu.url, metrics={"listen": address})
        d = DaemonProcess(layout)
        assert d.wait(30) == 78
    assert d.text().strip() == (f"{layout.config}: metrics.listen: cannot listen on {address}: "
                                "Address already in use")
    assert not (layout.state / "ledger.sqlite3").exists()


def _damage(path: Path, how: str) -> None:
    if how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("how", ["empty", "random", "truncated"])
def test_a_corrupt_ledger_is_refused_with_one_line(emu: Emulator, layout: Deployment,
                                                   how: str) -> None:
    """A ledger that is empty, random bytes or cut short is refused by run and by status: one
    line naming the file and where to read what to do, exit 78; the file stays as it was."""
    for i in range(40):  # enough jobs for a ledger of many pages
        (layout.inbox / f"{'n' * 150}{i}.txt.wav").write_text("not audio")
    layout.write_config(emu.url)
    assert DaemonProcess(layout, once=True).wait(90) == 1
    ledger = layout.state / "ledger.sqlite3"
    _damage(ledger, how)
    before = ledger.read_bytes()
    d = DaemonProcess(layout, once=True)
    assert d.wait(30) == 78
    st = run_cli(layout, "status", "-c", str(layout.config))
    for text in (d.text(), st.stderr):
        (line,) = text.strip().splitlines()
        assert f"ledger {ledger} is " in line and "'Recovering the ledger'" in line, line
    assert st.returncode == 78 and not st.stdout
    assert ledger.read_bytes() == before


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_ledger_deleted_or_replaced_under_the_daemon_stops_it(emu: Emulator,
                                                                layout: Deployment,
                                                                how: str) -> None:
    """The ledger deleted (or replaced by another file) while the daemon runs: it says so and
    stops with exit 78 instead of carrying on without knowing what it already paid for."""
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        ledger = layout.state / "ledger.sqlite3"
        if how == "deleted":
            ledger.unlink()
        else:
            ledger.with_name("other").write_bytes(ledger.read_bytes())
            os.replace(ledger.with_name("other"), ledger)
        assert d.wait(30) == 78, d.text()
    finally:
        d.kill()
    (lost,) = d.saw("ledger.lost")
    assert how in lost["reason"] and str(layout.state / "ledger.sqlite3") in lost["reason"]


def test_a_full_state_folder_holds_the_paid_answer_pauses_and_resumes(
        emu: Emulator, layout: Deployment, small_fs: Path) -> None:
    """The state folder fills while a request is in flight: the paid answer is held in memory,
    intake and API work pause with the reason in the log, status, /healthz and the status
    file; nothing fails, no worker dies; once space is freed it resumes by itself, journals
    the answer and finishes every file, paying for each content once."""
    port = _free_port()
    layout.state = small_fs
    layout.write_config(emu.url, pause_probe_seconds=0.5, metrics={"listen": f"127.0.0.1:{port}"})
    emu.add_fault(FaultRule("slow", delay=2.0))
    d = DaemonProcess(layout)
    filler: Path | None = None
    try:
        d.wait_ready()
        tones.write(layout.inbox / "first.wav", ["alpha", "zulu"])
        wait_for(emu.in_flight, 20, what="the request in flight")
        filler = fill(small_fs)
        (paused,) = wait_for(lambda: d.saw("daemon.paused"), 30, what="the pause")
        assert paused["reason"].startswith(f"the state folder {small_fs} is full")
        assert paused["held_answers"] == 1 and paused["paused"] == "intake and API work"
        for i, word in enumerate(["bravo", "charlie", "delta", "echo"]):
            tones.write(layout.inbox / f"later{i}.wav", [word, "zulu"])
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 503 and f"the state folder {small_fs} is full" in health.text
        status = wait_for(lambda: (s := d.status()) and s["paused"] and s, 10,
                          what="the pause in the status file")
        assert status["held_in_memory"] == {"answers": 1, "writes": 1}
        st = json.loads(run_cli(layout, "status", "-c", str(layout.config), "--json").stdout)
        assert st["paused"] and "is full" in st["paused_reason"] and st["paused_since"]
        assert len(emu.calls) == 1 and not d.saw("job.failed")
        filler.unlink()
        filler = None
        wait_for(lambda: d.saw("daemon.resumed"), 30, what="the resume")
        wait_for(lambda: len(layout.sidecar_docs()) == 5, 60, what="every file transcribed")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        if filler is not None:
            filler.unlink()
        assert d.stop() == 0, d.text()
    assert not d.saw("job.failed") and not d.saw("worker.error")
    assert Counter(c.audio_sha256 for c in emu.calls if c.ok).most_common(1)[0][1] == 1
    assert len(emu.calls) == 5
    assert (layout.processed / "first.txt").read_text() == "alpha zulu.\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
