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
    """A pausing error closes the gate; one probe is let through at a time, never two at once,
    the first after a second, then at doubling intervals capped at probe_every; a probe that
    pauses again reschedules; one that does not reopens."""
    clock, queue = Clock(), Queue()
    gate = PauseGate(3.0, clock=clock)
    assert gate.take(queue.claim) == FakeJob(1)
    assert gate.finished(1, OperatorError("HTTP 401: bad key")) == Change(
        True, "HTTP 401: bad key", 0.0)
    assert gate.since is not None
    assert gate.take(queue.claim) is None and queue.asked == 1  # not even asked
    waits = []
    for expected_id in (2, 3, 4, 5):
        waits.append(gate.next_probe_in())
        clock.now += waits[-1] - 0.01
        assert gate.take(queue.claim) is None
        clock.now += 0.01
        probe = gate.take(queue.claim)
        assert probe == FakeJob(expected_id) and gate.probe == expected_id
        assert gate.take(queue.claim) is None  # one probe at a time
        assert gate.finished(expected_id, OperatorError("HTTP 402: no balance")) is None
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert gate.reason == "HTTP 402: no balance"
    clock.now += 3.0
    assert gate.take(queue.claim) == FakeJob(6)
    clock.now += 5.0
    assert gate.finished(6, TransientApiError("HTTP 503")) == Change(False, None, 17.0)
    assert gate.reason is None and gate.since is None and gate.take(queue.claim) == FakeJob(7)


def test_probe_now_lets_the_next_probe_through_at_once() -> None:
    """After probe_now (a reload) a closed gate lets a probe through without waiting."""
    clock, queue = Clock(), Queue()
    gate = PauseGate(60.0, clock=clock)
    gate.take(queue.claim)
    gate.finished(1, OperatorError("HTTP 401"))
    assert gate.take(queue.claim) is None
    gate.probe_now()
    assert gate.next_probe_in() == 0.0 and gate.take(queue.claim) == FakeJob(2)


def test_jobs_ending_paused_after_the_pause_do_not_delay_the_probe() -> None:
    """Jobs that were in flight when the gate closed and end with the same error afterwards
    leave the probe where it was."""
    clock, queue = Clock(), Queue()
    gate = PauseGate(60.0, clock=clock)
    for _ in range(3):
        gate.take(queue.claim)
    gate.finished(1, OperatorError("unreachable"))
    clock.now += 0.9
    gate.finished(2, OperatorError("unreachable"))
    gate.finished(3, OperatorError("unreachable"))
    assert abs((gate.next_probe_in() or 0) - 0.1) < 1e-9


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
