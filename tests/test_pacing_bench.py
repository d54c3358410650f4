"""The pacing benchmark's parts: the oracle's window decisions, and a tiny run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main
from bench.oracle import Entry, Oracle
from bench.scenarios.pacing import units


def oracle(tmp_path: Path, costs: list[int], rpm: int = 3, tpm: int = 100) -> Oracle:
    """An oracle over ``costs`` (bodies are empty files; nothing is sent)."""
    (tmp_path / "b").write_bytes(b"{}")
    manifest = [{"body": str(tmp_path / "b"), "sha256": str(i), "cost": c}
                for i, c in enumerate(costs)]
    return Oracle("http://127.0.0.1:9/v1", manifest, rpm=rpm, tpm=tpm, window=60.0, key="k")


def test_oracle_waits_for_the_counted_times(tmp_path: Path) -> None:
    """The oracle waits until the account's own count times free the windows; a request the
    account has not shown yet blocks what depends on it."""
    o = oracle(tmp_path, [50, 40, 30])
    o.entries[0], o.entries[1] = Entry(50), Entry(40)
    assert o._wait(10, 100.0) == 0  # 90 + 10 fits, whenever they were counted
    assert o._wait(30, 100.0) is None  # depends on when the unseen ones leave
    o.entries[0].at, o.entries[1].at = 95.0, 97.0
    assert o._wait(30, 100.0) == pytest.approx(95.0 + 60.02 - 100.0)
    o.entries[2] = Entry(1)
    o.entries[2].at = 99.0
    assert o._wait(1, 100.0) == pytest.approx(95.0 + 60.02 - 100.0)  # 3 requests: rpm
    o.http.close()


def test_units_are_answered_requests_or_their_audio() -> None:
    """Throughput counts answered requests (or their audio seconds); refusals count nothing."""
    calls = [{"time": t, "status": 200, "usage": {"seconds": 120}} for t in (0, 30, 90)]
    calls.append({"time": 20, "status": 429, "usage": None})
    assert (units(calls, "requests"), units(calls, "audio s")) == (3.0, 360.0)


def test_oracle_sends_the_first_request_that_fits(tmp_path: Path) -> None:
    """First fit: when the next request does not fit, a later, smaller one that does goes."""
    o = oracle(tmp_path, [80, 85, 15], rpm=10)
    assert o._first_fit(0.0) == 0
    o.queue.remove(0)
    o.entries[0] = Entry(80)
    o.entries[0].at = 0.0
    assert o._first_fit(1.0) == 2  # 85 would not fit, 15 does
    o.queue.remove(2)
    o.entries[2] = Entry(15)
    assert o._first_fit(30.0) is None
    assert o._first_fit(60.03) == 1  # the 80 left the window
    o.http.close()


def test_pacing_smoke_prints_daemon_and_oracle(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run drives the real daemon and the oracle and prints their row."""
    code = main(["pacing", "--smoke", "--no-write", "--scratch", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| rpm: 12 x 5 s | total | 12 | 0 / 0 |" in out, out
    assert code == 0, out
    assert not any(tmp_path.iterdir()), "the scenario left scratch data behind"
