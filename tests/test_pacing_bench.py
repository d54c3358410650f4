"""The pacing benchmark's parts: the oracle's window decisions, and a tiny run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main
from bench.oracle import Entry, Oracle
from bench.scenarios.pacing import sustained


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


def test_sustained_counts_whole_minutes_from_the_first_request() -> None:
    """Sustained throughput counts what was answered in the whole minutes after the first."""
    calls = [{"time": t, "status": 200, "usage": {"seconds": 120}} for t in (0, 10, 60.5, 130)]
    calls.append({"time": 20, "status": 429, "usage": None})
    assert sustained(calls, "requests") == 1.5  # 3 in [0, 120): 2 minutes
    assert sustained(calls, "audio s") == 180.0


def test_pacing_smoke_prints_daemon_and_oracle(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run drives the real daemon and the oracle and prints their row."""
    code = main(["pacing", "--smoke", "--no-write", "--scratch", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| rpm: 12 x 5 s | total | 12 | 0 / 0 |" in out, out
    assert code == 0, out
    assert not any(tmp_path.iterdir()), "the scenario left scratch data behind"
