"""The scheduler thread's admission round: one file that cannot be admitted never stops another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mimo_watchd import intake
from mimo_watchd.config import WatchSettings
from mimo_watchd.ledger import SqliteLedger
from mimo_watchd.ledger.guard import GuardedLedger
from mimo_watchd.scheduler import Scheduler
from mimo_watchd.settle import Ready, Settler


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[GuardedLedger]:
    inner = SqliteLedger(tmp_path / "state")
    yield GuardedLedger(inner, retry_every=1.0)
    inner.close()


class _Settled(Settler):
    """A settler whose next poll hands out the given files, and which records forgets."""

    def __init__(self, ready: list[Ready]) -> None:
        super().__init__(probe=lambda _p: None, incomplete_timeout=1.0)
        self.ready = ready
        self.forgotten: list[Path] = []

    def poll(self) -> list[Ready]:
        out, self.ready = self.ready, []
        return out

    def forget(self, path: Path) -> None:
        self.forgotten.append(path)
        super().forget(path)


def test_a_file_that_fails_admission_does_not_stop_the_rest(
        ledger: GuardedLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error admitting one settled file is logged with its path, the file is
    forgotten (so a later scan offers it again), and the files after it in the same round are
    queued."""
    watch = WatchSettings(path=tmp_path, processed_dir=tmp_path / "p", failed_dir=tmp_path / "f")
    files = []
    for name in ("bad.wav", "good1.wav", "good2.wav"):
        (tmp_path / name).write_bytes(name.encode())
        st = (tmp_path / name).stat()
        files.append(Ready(watch, tmp_path / name, st.st_size, st.st_mtime_ns, 0.0))
    real_admit = intake.admit

    def admit(led: object, ready: Ready) -> object:
        if ready.path.name == "bad.wav":
            raise RuntimeError("boom")
        return real_admit(ledger, ready)

    monkeypatch.setattr(intake, "admit", admit)
    settler = _Settled(files)
    scheduler = Scheduler(ledger=ledger, settler=settler, watches=lambda: [watch],
                          fail_now=lambda *_: None, on_ledger_error=lambda _e: None,
                          changed=lambda: None)
    with capture_logs() as logs:
        scheduler._admit_settled()
    assert sorted(Path(j.path).name for j in ledger.jobs()) == ["good1.wav", "good2.wav"]
    assert settler.forgotten == [tmp_path / "bad.wav"]
    (line,) = [e for e in logs if e["event"] == "intake.error"]
    assert line["path"] == str(tmp_path / "bad.wav") and line["log_level"] == "error"
