"""`mimo-watchd transcribe`: a file given twice is paid once, same-stem inputs get distinct
sidecars by the daemon's rule, and a lost race names the real target (issue 11 items 9, 10)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd import fsutil
from mimo_watchd.cli import sidecar_stems
from mimo_watchd.emulator import tones
from mimo_watchd.outputs import write_sidecars
from tests.test_transcribe import WORDS, emulator_url, transcribe

__all__ = ["emulator_url"]  # the fixture


def calls(url: str) -> list[dict[str, Any]]:
    """The calls the emulator process received so far."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_emulator/calls") as r:
        found: list[dict[str, Any]] = json.load(r)
    return found


def test_the_same_file_given_twice_is_transcribed_once(
        emulator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``transcribe clip.wav clip.wav ./clip.wav``: one request, one pair of sidecars, exit 0,
    and no temp file name anywhere in the output."""
    clip = tones.write(tmp_path / "clip.wav", WORDS)
    before = len(calls(emulator_url))
    monkeypatch.chdir(tmp_path)
    r = transcribe(emulator_url, clip, clip, "./clip.wav")
    assert r.returncode == 0, r.stderr
    assert len(calls(emulator_url)) == before + 1
    assert clip.with_suffix(".txt").read_text() == " ".join(WORDS) + ".\n"
    assert ".mimo-watchd-" not in r.stdout + r.stderr


def test_same_stem_inputs_get_their_own_sidecars(emulator_url: str, tmp_path: Path) -> None:
    """``tones.wav tones.mp3``: the first keeps the plain stem, the second keeps its
    extension in the stem (``tones.mp3.txt``), each JSON naming its own input; run again,
    both refuse to overwrite without --force."""
    wav = tones.write(tmp_path / "tones.wav", WORDS)
    mp3 = tones.write(tmp_path / "tones.mp3", ["alpha", "bravo"], "mp3")
    r = transcribe(emulator_url, wav, mp3)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tones.txt").read_text() == " ".join(WORDS) + ".\n"
    assert (tmp_path / "tones.mp3.txt").read_text() == "alpha bravo.\n"
    assert json.loads((tmp_path / "tones.json").read_text())["source"]["path"] == str(wav)
    assert json.loads((tmp_path / "tones.mp3.json").read_text())["source"]["path"] == str(mp3)
    again = transcribe(emulator_url, wav, mp3)
    assert again.returncode == 1
    assert f"{tmp_path / 'tones.txt'} exists (use --force" in again.stderr
    assert f"{tmp_path / 'tones.mp3.txt'} exists (use --force" in again.stderr


def test_sidecar_stems_follow_argument_order_and_real_paths(tmp_path: Path) -> None:
    """The stem rule in one place: distinct inputs by real path, the first of a stem per
    output folder takes it, the next keeps its extension, a third the next number."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "link.wav").symlink_to(tmp_path / "x.wav")
    files = [tmp_path / "x.wav", tmp_path / "x.mp3", tmp_path / "link.wav",
             tmp_path / "a" / "y.wav", tmp_path / "b" / "y.wav"]
    assert [(p.name, stem) for p, _, stem in sidecar_stems(files, None)] == [
        ("x.wav", "x"), ("x.mp3", "x.mp3"), ("y.wav", "y"), ("y.wav", "y")]
    out = tmp_path / "out"
    assert [stem for _, folder, stem in sidecar_stems(files, out) if folder == out] == [
        "x", "x.mp3", "y", "y.wav"]
    third = [tmp_path / "a" / "y.wav", tmp_path / "b" / "y.wav", tmp_path / "y.wav"]
    assert [stem for _, _, stem in sidecar_stems(third, out)] == ["y", "y.wav", "y-1"]


def test_a_lost_race_names_the_real_target(tmp_path: Path) -> None:
    """A no-overwrite write that finds its target taken says so with the target's own name,
    never the temp file's, and leaves no half set or temp behind."""
    (tmp_path / "c.json").write_text("theirs")
    with pytest.raises(FileExistsError) as info:
        fsutil.atomic_write(tmp_path / "c.json", "ours")
    assert info.value.filename == str(tmp_path / "c.json")
    assert ".mimo-watchd-" not in str(info.value)
    doc = {"transcript": "hello"}
    with pytest.raises(FileExistsError) as info:
        write_sidecars(doc, tmp_path, "c")
    assert info.value.filename == str(tmp_path / "c.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]
    assert (tmp_path / "c.json").read_text() == "theirs"
