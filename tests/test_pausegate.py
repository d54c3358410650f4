"""The pause decision, with a fake clock: closed by errors that pause, probed, opened again."""

from __future__ import annotations

from dataclasses import dataclass

from mimo_watchd.errors import MimoWatchdError, OperatorError, TransientApiError
from mimo_watchd.pausegate import Change, PauseGate


@dataclass(frozen=True)
class FakeJob:
    id: int


class Queue:
    """Hands out jobs 1, 2, 3, ... and counts how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def claim(self) -> FakeJob:
        self.asked += 1
        return FakeJob(self.asked)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_open_gate_lets_every_claim_through() -> None:
    """While open, every take claims a job, and ordinary failures change nothing."""
    gate, queue = PauseGate(60.0, clock=Clock()), Queue()
    assert [gate.take(queue.claim) for _ in range(3)] == [FakeJob(1), FakeJob(2), FakeJob(3)]
    assert gate.finished(1, TransientApiError("HTTP 503")) is None
    assert gate.finished(2, None) is None
    assert gate.reason is None and gate.next_probe_in() is None


def test_a_pausing_error_closes_the_gate_until_a_probe_succeeds() -> None:
    """A pausing error closes the gate; one probe is let through every probe_every seconds,
    never two at once; a probe that pauses again reschedules; one that does not reopens."""
    clock, queue = Clock(), Queue()
    gate = PauseGate(60.0, clock=clock)
    assert gate.take(queue.claim) == FakeJob(1)
    assert gate.finished(1, OperatorError("HTTP 401: bad key")) == Change(
        True, "HTTP 401: bad key", 0.0)
    assert gate.take(queue.claim) is None and queue.asked == 1  # not even asked
    clock.now += 59.5
    assert gate.take(queue.claim) is None and gate.next_probe_in() == 0.5
    clock.now += 0.5
    probe = gate.take(queue.claim)
    assert probe == FakeJob(2) and gate.probe == 2
    assert gate.take(queue.claim) is None  # one probe at a time
    assert gate.finished(2, OperatorError("HTTP 402: no balance")) is None  # still closed
    assert gate.reason == "HTTP 402: no balance" and gate.next_probe_in() == 60.0
    clock.now += 60.0
    assert gate.take(queue.claim) == FakeJob(3)
    clock.now += 5.0
    assert gate.finished(3, TransientApiError("HTTP 503")) == Change(False, None, 125.0)
    assert gate.reason is None and gate.take(queue.claim) == FakeJob(4)


def test_only_the_probe_reopens_the_gate() -> None:
    """A job that started before the pause and ends well does not reopen the gate."""
    gate, queue = PauseGate(1.0, clock=Clock()), Queue()
    gate.take(queue.claim)
    gate.take(queue.claim)
    gate.finished(1, OperatorError("HTTP 401"))
    assert gate.finished(2, None) is None and gate.reason == "HTTP 401"


def test_any_error_that_pauses_closes_the_gate() -> None:
    """The gate reads ``pauses``, not the error's type: a new kind of pause needs no change."""

    class DiskFull(MimoWatchdError):
        pauses = True

    gate = PauseGate(1.0, clock=Clock())
    assert gate.take(Queue().claim) == FakeJob(1)
    assert gate.finished(1, DiskFull("state folder full")) == Change(True, "state folder full",
                                                                     0.0)
