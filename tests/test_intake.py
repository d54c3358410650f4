"""intake.admit: the one answer to "have we seen this file?", on a real ledger and real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mimo_watchd.config import WatchSettings
from mimo_watchd.intake import admit
from mimo_watchd.ledger import SqliteLedger, State
from mimo_watchd.settle import Ready


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger(tmp_path / "state")
    yield ledger
    ledger.close()


def ready(watch: WatchSettings, path: Path) -> Ready:
    st = path.stat()
    return Ready(watch, path, st.st_size, st.st_mtime_ns, arrived_at=0.0)


def test_a_file_is_new_work_once_per_identity(ledger: SqliteLedger, tmp_path: Path) -> None:
    """Offered again unchanged: nothing new. Changed while queued: the same job, with the new
    identity. Offered again after its job ended (moved back by ``retry``): a new job."""
    watch = WatchSettings(path=tmp_path, processed_dir=tmp_path / "p", failed_dir=tmp_path / "f")
    path = tmp_path / "a.wav"
    path.write_bytes(b"one")
    first = admit(ledger, ready(watch, path))
    assert first is not None and first.arrived_at == "1970-01-01T00:00:00Z"
    assert admit(ledger, ready(watch, path)) is None
    path.write_bytes(b"two, longer")
    changed = admit(ledger, ready(watch, path))
    assert changed is not None and changed.id == first.id and changed.sha256 != first.sha256
    ledger.finish(first.id, State.DONE, final_path="/p/a.wav", outcome="done")
    again = admit(ledger, ready(watch, path))
    assert again is not None and again.id != first.id


def test_a_file_gone_or_unreadable_is_not_work(ledger: SqliteLedger, tmp_path: Path) -> None:
    """A file that vanished, or cannot be read, queues nothing."""
    watch = WatchSettings(path=tmp_path, processed_dir=tmp_path / "p", failed_dir=tmp_path / "f")
    path = tmp_path / "gone.wav"
    path.write_bytes(b"x")
    offer = ready(watch, path)
    path.unlink()
    assert admit(ledger, offer) is None
    locked = tmp_path / "locked"
    locked.mkdir()
    assert admit(ledger, ready(watch, locked)) is None  # a folder: reading it fails
    assert ledger.counts()["QUEUED"] == 0


def test_a_folder_swapped_for_a_symlink_after_settling_is_not_read(
        ledger: SqliteLedger, tmp_path: Path) -> None:
    """The folder of a settled file replaced by a symlink to a private folder before intake
    hashes it: nothing is queued (issue 12 item 1)."""
    root, private = tmp_path / "inbox", tmp_path / "private"
    (root / "sub").mkdir(parents=True)
    private.mkdir()
    (private / "b.wav").write_bytes(b"private")
    watch = WatchSettings(path=root, processed_dir=tmp_path / "p", failed_dir=tmp_path / "f")
    (root / "sub" / "b.wav").write_bytes(b"private")
    offer = ready(watch, root / "sub" / "b.wav")
    (root / "sub").rename(tmp_path / "away")
    (root / "sub").symlink_to(private)
    assert admit(ledger, offer) is None
    assert ledger.counts()["QUEUED"] == 0
