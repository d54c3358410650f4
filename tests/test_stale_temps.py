"""Temp files a killed daemon left mid-write are removed at the next start or resume."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mimo_watchd import placement
from mimo_watchd.fsutil import TEMP_PREFIX, remove_stale_temps


def _temp(folder: Path, name: str, age: float) -> Path:
    path = folder / f"{TEMP_PREFIX}{name}.tmp"
    path.write_bytes(b"half")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_only_our_temps_from_before_the_start_are_removed(tmp_path: Path) -> None:
    """Old temps of ours go; a temp being written now and other files stay."""
    old = _temp(tmp_path, "old", 60)
    fresh = _temp(tmp_path, "fresh", 0)
    other = tmp_path / ".other.tmp"
    other.write_bytes(b"x")
    os.utime(other, (time.time() - 60, time.time() - 60))
    assert remove_stale_temps(tmp_path, older_than=time.time() - 10) == 1
    assert not old.exists() and fresh.exists() and other.exists()


def test_resumed_plan_sweeps_its_sidecar_and_audio_folders(tmp_path: Path) -> None:
    """The folders a plan writes to are swept; a missing folder is no error."""
    side, audio = tmp_path / "side", tmp_path / "audio"
    side.mkdir()
    audio.mkdir()
    temps = [_temp(side, "a", 60), _temp(audio, "b", 60)]
    plan = placement.Plan(kind="done", source=str(tmp_path / "in.wav"),
                          audio_dest=str(audio / "in.wav"), sidecar_dir=str(side), stem="in")
    assert placement.remove_stale_temps(plan, older_than=time.time()) == 2
    assert not any(t.exists() for t in temps)
    gone = placement.Plan(kind="done", source="x", audio_dest=str(tmp_path / "no" / "x.wav"),
                          sidecar_dir=str(tmp_path / "no"), stem="x")
    assert placement.remove_stale_temps(gone, older_than=time.time()) == 0
