"""A daemon stopped (SIGSTOP: a suspended VM, a paused container) for longer than its request
deadline while the answer arrives reads that answer when it runs again and journals it: the
audio is paid once (issue 12 item 4). Through the real daemon, real signals and the emulator."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess
from tests.support import Deployment, wait_for

pytestmark = pytest.mark.e2e

STOPPED_SECONDS = 8.0  # past the request's whole deadline (about 4 s with these timeouts)


def test_an_answer_that_arrived_while_stopped_is_used_not_paid_again(emu: Emulator,
                                                                       tmp_path: Path) -> None:
    """Stopped right after sending, past its deadline, while the (slow) answer arrives: on
    SIGCONT the daemon takes the answer; the emulator billed one call, the file is done."""
    layout = Deployment(tmp_path, test_timing=True)
    layout.write_config(emu.url, api={"timeout_base_seconds": 1.5,
                                      "timeout_per_audio_second": 0.0,
                                      "connect_timeout_seconds": 0.5})
    emu.add_fault(FaultRule("slow", delay=0.5))
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        tones.write(layout.inbox / "call.wav", ["alpha", "bravo", "charlie"])
        wait_for(lambda: bool(emu.calls), 30, what="the request")
        d.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: emu.calls[0].ok, 10, what="the answer sent to the stopped daemon")
            time.sleep(STOPPED_SECONDS)  # the stop itself: what the deadline is judged across
        finally:
            d.signal(signal.SIGCONT)
        wait_for(lambda: layout.finished() == 1, 30, what="the file finished")
        d.wait_idle()
    finally:
        assert d.stop() == 0, d.text()
    assert [c.billed for c in emu.calls] == [True], [c.summary() for c in emu.calls]
    (doc,) = layout.sidecar_docs()
    assert doc["transcript"].rstrip(".") == "alpha bravo charlie"
