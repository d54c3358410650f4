"""`mimo-watchd transcribe` end to end: real files of many formats, a real emulator process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimo_watchd.emulator import tones
from tests.daemon_support import API_KEY, REPO
from tests.support import wait_for

WORDS = ["hotel", "india", "juliett"]
FORMATS = ["wav", "mp3", "m4a", "ogg", "opus", "flac", "amr", "webm"]


@pytest.fixture(scope="module")
def emulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mimo-watchd emulate` as its own process, on a free port it prints."""
    log = tmp_path_factory.mktemp("emu") / "emulate.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mimo_watchd", "emulate", "--port", "0",
                                 "--latency-scale", "0"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            url = wait_for(lambda: _url_in(log.read_text()), 30, what="emulator URL")
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def _url_in(text: str) -> str | None:
    for token in text.split():
        if token.startswith("http://127.0.0.1:") and token.rstrip("/").endswith("/v1"):
            return token.rstrip("/")
    return None


def transcribe(url: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MIMO_API_KEY": API_KEY, "MIMO_BASE_URL": url,
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mimo_watchd", "transcribe",
                           *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_every_format_transcribes(emulator_url: str, tmp_path: Path) -> None:
    """wav, mp3, m4a, ogg, opus, flac, amr and webm all give the known transcript."""
    files = [tones.write(tmp_path / f"clip-{fmt}.{fmt}", WORDS, fmt) for fmt in FORMATS]
    before = {f: f.read_bytes() for f in files}
    r = transcribe(emulator_url, *files)
    assert r.returncode == 0, r.stderr
    for f in files:
        assert f.with_suffix(".txt").read_text() == " ".join(WORDS) + ".\n"
        doc = json.loads(f.with_suffix(".json").read_text())
        assert doc["transcript"] == " ".join(WORDS) + "."
        assert doc["usage"]["seconds"] >= 1 and doc["chunks"]
        assert f.read_bytes() == before[f]  # the input is never modified


def test_bad_files_fail_cleanly_and_others_succeed(emulator_url: str, tmp_path: Path) -> None:
    """A text file named .wav and an empty file fail with one clear line each; exit 1."""
    good = tones.write(tmp_path / "good.wav", WORDS)
    text = tmp_path / "notes.wav"
    text.write_text("definitely not audio\n" * 50)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    r = transcribe(emulator_url, good, text, empty, tmp_path / "missing.wav")
    assert r.returncode == 1
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3, r.stderr
    assert any("notes.wav" in line for line in failed)
    assert any("empty.mp3" in line and "empty" in line.lower().split("empty.mp3")[1]
               for line in failed)
    assert good.with_suffix(".txt").exists()
    assert not text.with_suffix(".txt").exists() and not empty.with_suffix(".json").exists()


def test_no_overwrite_without_force_and_output_dir(emulator_url: str, tmp_path: Path) -> None:
    """Existing sidecars are kept unless --force; --output-dir and --json work."""
    clip = tones.write(tmp_path / "c.wav", WORDS)
    clip.with_suffix(".txt").write_text("mine\n")
    r = transcribe(emulator_url, clip)
    assert r.returncode == 1 and "--force" in r.stderr
    assert clip.with_suffix(".txt").read_text() == "mine\n"
    r = transcribe(emulator_url, "--force", clip)
    assert r.returncode == 0 and clip.with_suffix(".txt").read_text() != "mine\n"
    out = tmp_path / "out"
    r = transcribe(emulator_url, "--json", "--stream", "--output-dir", out, clip)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["transcript"] == " ".join(WORDS) + "."
    assert (out / "c.json").exists()
    assert API_KEY not in r.stdout + r.stderr


def test_missing_key_is_a_config_error(emulator_url: str, tmp_path: Path) -> None:
    """Without a key the command says so and exits 78."""
    clip = tones.write(tmp_path / "c.wav", WORDS)
    env = {k: v for k, v in os.environ.items() if k != "MIMO_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "mimo_watchd", "transcribe", str(clip)],
                       capture_output=True, text=True, timeout=60, check=False,
                       env={**env, "PYTHONPATH": str(REPO), "MIMO_BASE_URL": emulator_url})
    assert r.returncode == 78 and "MIMO_API_KEY" in r.stderr
