"""A reload changes the daemon's settings, never those of a job already running (real daemon)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess
from tests.support import Deployment, wait_for

pytestmark = pytest.mark.e2e

# Appends "<label> <audio file name>" (a hook's arguments: outcome, audio, json follow ours).
HOOK = ("import os, sys\n"
        "with open(sys.argv[1], 'a') as fh:\n"
        "    fh.write(sys.argv[2] + ' ' + os.path.basename(sys.argv[4]) + '\\n')\n")


def test_a_running_job_keeps_the_settings_it_started_with(emu: Emulator, tmp_path: Path) -> None:
    """SIGHUP while a file's request is in flight swaps its watch's success hook: that file
    still gets the hook it started with; a file arriving afterwards gets the new one."""
    layout = Deployment(tmp_path, test_timing=True)
    script, record = tmp_path / "hook.py", tmp_path / "hooks.txt"
    script.write_text(HOOK)

    def config(label: str) -> None:
        layout.write_config(emu.url, watch={"on_success": {
            "command": [sys.executable, str(script), str(record), label]}})

    config("started-with")
    emu.add_fault(FaultRule("slow", delay=4.0))
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        tones.write(layout.inbox / "first.wav", ["alpha", "zulu"])
        wait_for(emu.in_flight, 20, "the first file's request in flight")
        config("reloaded")
        d.signal(signal.SIGHUP)
        wait_for(lambda: d.saw("reload.done"), 20, "reload")
        assert not d.saw("job.done"), "the request ended before the reload: nothing tested"
        wait_for(lambda: record.exists() and record.read_text(), 30, "the first hook")
        tones.write(layout.inbox / "second.wav", ["bravo", "zulu"])
        wait_for(lambda: len(record.read_text().splitlines()) == 2, 30, "second hook")
    finally:
        assert d.stop() == 0, d.text()
    assert record.read_text().splitlines() == ["started-with first.wav", "reloaded second.wav"]
