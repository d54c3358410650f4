"""The settler's container probe reads a file below its watch root, never through a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mimo_watchd.errors import SourceChangedError
from mimo_watchd.inputs import probe_below


def _reads(fd: int, name: str) -> tuple[bytes, str]:
    return os.pread(fd, 100, 0), name


def test_the_probe_reads_the_file_below_its_watch(tmp_path: Path) -> None:
    """A file inside one of the roots is probed through a descriptor, under its own name."""
    root = tmp_path / "inbox"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.wav").write_bytes(b"audio")
    other = tmp_path / "other"
    other.mkdir()
    path = root / "sub" / "a.wav"
    assert probe_below([other, root], _reads, path) == (b"audio", str(path))


def test_a_folder_swapped_for_a_symlink_is_never_probed(tmp_path: Path) -> None:
    """The folder of a settling file replaced by a symlink to a private folder: the probe never
    sees the private file (issue 12 item 1: every decode refuses a symlink below the root)."""
    root, private = tmp_path / "inbox", tmp_path / "private"
    (root / "sub").mkdir(parents=True)
    private.mkdir()
    (private / "b.wav").write_bytes(b"private")
    (root / "sub" / "b.wav").write_bytes(b"public")
    (root / "sub").rename(tmp_path / "away")
    (root / "sub").symlink_to(private)
    seen: list[bytes] = []

    def probe(fd: int, name: str) -> None:
        seen.append(os.pread(fd, 100, 0))

    with pytest.raises(SourceChangedError):
        probe_below([root], probe, root / "sub" / "b.wav")
    assert seen == []


def test_a_path_outside_every_watch_is_refused(tmp_path: Path) -> None:
    """A path no watch contains (its watch removed by a reload) is not opened at all."""
    (tmp_path / "x.wav").write_bytes(b"x")
    with pytest.raises(SourceChangedError):
        probe_below([tmp_path / "inbox"], _reads, tmp_path / "x.wav")
