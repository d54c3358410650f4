"""One daemon per state folder: a second ``run`` is refused, the other commands keep working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess, run_cli
from tests.support import Deployment, wait_for


@pytest.mark.e2e
@pytest.mark.parametrize("second", ["run", "run --once"])
def test_a_second_daemon_is_refused_and_takes_nothing(emu: Emulator, tmp_path: Path,
                                                      second: str) -> None:
    """While a daemon works on a file, a second one on the same state folder (by hand, or a
    cron --once) exits 75 naming the first one's PID, before it recovers, claims or pays for
    anything; status, check and retry work meanwhile; the file is paid for once."""
    layout = Deployment(tmp_path, test_timing=True)
    layout.write_config(emu.url)
    emu.add_fault(FaultRule("slow", delay=3.0))
    first = DaemonProcess(layout)
    try:
        first.wait_ready()
        tones.write(layout.inbox / "busy.wav", ["alpha", "zulu"])
        wait_for(emu.in_flight, 20, what="the first daemon's request in flight")
        other = DaemonProcess(layout, once=second.endswith("--once"))
        try:
            assert other.wait(30) == 75, other.text()
        finally:
            other.kill()
        lines = other.text().strip().splitlines()
        assert lines == [f"mimo-watchd run: another mimo-watchd (pid {first.proc.pid}) is "
                         f"running on the state folder {layout.state}; stop it first (status, "
                         "retry and check work meanwhile)"], lines
        st = run_cli(layout, "status", "-c", str(layout.config), "--json")
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["running"] and status["pid"] == first.proc.pid
        assert status["in_progress"] == 1 and status["interrupted"] == 0
        assert run_cli(layout, "check", "-c", str(layout.config)).returncode == 0
        rt = run_cli(layout, "retry", "-c", str(layout.config), "--failed")
        assert rt.returncode == 0 and "0 file(s) moved back" in rt.stdout, rt
        wait_for(lambda: (layout.processed / "busy.txt").exists(), 30, what="the file done")
    finally:
        assert first.stop() == 0, first.text()
    assert len(emu.calls) == 1 and not first.saw("job.resume")
    assert (layout.processed / "busy.txt").read_text() == "alpha zulu.\n"
