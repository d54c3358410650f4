"""sd_notify over a real unix datagram socket, and the health-gated watchdog pinger."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mimo_watchd.notify import Notifier, WatchdogPinger, evaluate_health
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[1]


class Receiver:
    """A stand-in for systemd's notify socket that records datagrams and their sender pids."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def recv(self, timeout: float = 5.0) -> tuple[str, int]:
        """The next datagram's text and the sender's pid (from SCM_CREDENTIALS)."""
        self.sock.settimeout(timeout)
        msg, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        return msg.decode(), pid

    def text(self, timeout: float = 5.0) -> str:
        """The next datagram's text."""
        return self.recv(timeout)[0]

    def quiet_for(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds``."""
        try:
            self.recv(seconds)
        except TimeoutError:
            return True
        return False


def _receiver(address: str) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # systemd checks the sender's pid this way (NotifyAccess=main); the tests do too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(address)
    try:
        yield Receiver(sock, address)
    finally:
        sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # A short folder of our own: socket paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn") as d:
        yield from _receiver(os.path.join(d, "notify"))


@pytest.fixture
def notifier(receiver: Receiver) -> Iterator[Notifier]:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    yield n
    n.close()


def test_disabled_without_notify_socket() -> None:
    """Without $NOTIFY_SOCKET every call is a quiet no-op."""
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


def test_ready_with_status_is_one_datagram(receiver: Receiver, notifier: Notifier) -> None:
    """ready() sends READY=1 and the status together."""
    assert notifier.enabled
    assert notifier.ready("watching 2 folders")
    assert receiver.text() == "READY=1\nSTATUS=watching 2 folders"


def test_status_cannot_inject_assignments(receiver: Receiver, notifier: Notifier) -> None:
    """A newline in the status (a file name may hold one) cannot start a new assignment."""
    notifier.status("took evil\nREADY=1.wav")
    assert receiver.text() == "STATUS=took evil READY=1.wav"


def test_reloading_carries_monotonic_timestamp(receiver: Receiver, notifier: Notifier) -> None:
    """reloading() sends RELOADING=1 with the current CLOCK_MONOTONIC in microseconds."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    lines = receiver.text().split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_stopping_watchdog_and_extend(receiver: Receiver, notifier: Notifier) -> None:
    """stopping(), watchdog() and extend_timeout() send their assignments."""
    notifier.stopping()
    notifier.watchdog()
    notifier.extend_timeout(2.5)
    assert [receiver.text() for _ in range(3)] == [
        "STOPPING=1", "WATCHDOG=1", "EXTEND_TIMEOUT_USEC=2500000"]


def test_abstract_socket() -> None:
    """An address starting with '@' reaches the abstract socket of that name."""
    name = f"mimo-watchd-test-{uuid.uuid4().hex}"
    for rx in _receiver("\0" + name):
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        try:
            assert n.ready()
            assert rx.text() == "READY=1"
        finally:
            n.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC gives the interval, unless WATCHDOG_PID names another process."""
    assert Notifier.from_env(env).watchdog_interval() == expected


def test_send_failure_never_raises_and_logs_once(tmp_path: Path) -> None:
    """A missing socket makes sends return False with one warning, not one per call."""
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with capture_logs() as logs:
        assert n.watchdog() is False
        assert n.watchdog() is False
        assert n.status("still here") is False
    n.close()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["notify.send_failed"]


def test_unsupported_address_disables() -> None:
    """A vsock (or relative) address turns notifications off instead of failing later."""
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_child_process_sends_with_its_own_pid(receiver: Receiver) -> None:
    """A real daemon process sends through the module, and the datagram carries its pid."""
    code = ("from mimo_watchd.notify import Notifier\n"
            "n = Notifier.from_env()\n"
            "assert n.ready('child up') and n.stopping()\n")
    env = {**os.environ, "NOTIFY_SOCKET": receiver.address}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    try:
        first, pid = receiver.recv()
        second, _ = receiver.recv()
    finally:
        assert proc.wait(20) == 0
    assert (first, second) == ("READY=1\nSTATUS=child up", "STOPPING=1")
    assert pid == proc.pid


def test_pinger_pings_only_while_healthy(receiver: Receiver, notifier: Notifier) -> None:
    """Pings stop while the health check fails and resume when it passes again."""
    healthy = threading.Event()
    healthy.set()
    pinger = WatchdogPinger(notifier, healthy.is_set, interval=0.02)
    with capture_logs() as logs, pinger:
        assert receiver.text() == "WATCHDOG=1"
        assert receiver.text() == "WATCHDOG=1"
        healthy.clear()
        wait_for(lambda: any(e["event"] == "watchdog.withheld" for e in logs), 5,
                 "the pinger to withhold")
        # Pings sent before that may still be queued: read them, then none may come.
        wait_for(lambda: receiver.quiet_for(0.1), 5, "the queued pings to be read")
        assert receiver.quiet_for(0.2)
        healthy.set()
        assert receiver.text() == "WATCHDOG=1"
    assert "watchdog-pinger" not in [t.name for t in threading.enumerate()]
    events = [e["event"] for e in logs]
    assert events.count("watchdog.withheld") == 1
    assert events.count("watchdog.resumed") == 1


def test_pinger_period_is_half_the_watchdog(receiver: Receiver) -> None:
    """Without an explicit interval the pinger uses WATCHDOG_USEC / 2."""
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "60000000"})
    assert WatchdogPinger(n, lambda: True).period == 30.0


def test_pinger_without_watchdog_starts_no_thread() -> None:
    """With no watchdog configured the pinger does nothing."""
    pinger = WatchdogPinger(Notifier.from_env({}), lambda: True)
    pinger.start()
    assert pinger.period is None
    assert "watchdog-pinger" not in [t.name for t in threading.enumerate()]
    pinger.stop()


def test_pinger_survives_a_raising_health_check(receiver: Receiver, notifier: Notifier) -> None:
    """A health check that raises counts as unhealthy: no ping, the thread keeps going."""
    calls = []

    def flaky() -> tuple[bool, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return True, ""

    with capture_logs() as logs, WatchdogPinger(notifier, flaky, interval=0.02):
        assert receiver.text() == "WATCHDOG=1"
    assert len(calls) >= 2
    assert any("RuntimeError: boom" in e.get("reason", "") for e in logs)


def test_evaluate_health_normalises_forms() -> None:
    """A bool or an (ok, reason) tuple both become (ok, reason)."""
    assert evaluate_health(lambda: True) == (True, "")
    assert evaluate_health(lambda: (False, "observer died")) == (False, "observer died")
    assert evaluate_health(lambda: False)[0] is False
