"""The clip and subtitle options: an upgraded config still starts (0.1's audio options warn
and say what replaced them), bad values are reported with their paths, every option reaches
the audio layer, and the audio counters count what a transcribed file's line says."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimo_watchd.audio import AudioParams
from mimo_watchd.config import AudioSettings, load
from mimo_watchd.errors import ConfigError
from mimo_watchd.metrics import Metrics
from mimo_watchd.transcription import audio_params
from tests.daemon_support import REPO

WATCH = """
watches:
  - path: inbox
    processed_dir: processed
    failed_dir: failed
"""


def config(tmp_path: Path, audio: str, watch_extra: str = "") -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(f"audio:\n{audio}\n{WATCH}{watch_extra}", encoding="utf-8")
    return p


def test_the_options_of_0_1_warn_and_say_what_replaced_them(tmp_path: Path) -> None:
    """chunk_format is renamed (its value applies to clip_format); max_chunk_seconds and the
    silence options changed meaning and are ignored; each is one warning naming its path."""
    settings = load(config(tmp_path, "  max_chunk_seconds: 300.0\n  chunk_format: wav\n"
                                     "  silence_threshold_db: -40.0\n"
                                     "  silence_search_seconds: 30.0\n  overlap_seconds: 1.5"))
    audio = settings.audio
    assert (audio.clip_format, audio.max_clip_seconds, audio.overlap_seconds) == ("wav", 60.0,
                                                                                  1.5)
    assert [w.split(":")[0] for w in settings.warnings] == [
        "audio.max_chunk_seconds", "audio.chunk_format", "audio.silence_threshold_db",
        "audio.silence_search_seconds"]
    assert "audio.max_clip_seconds" in settings.warnings[0]
    assert "renamed audio.clip_format (value applied)" in settings.warnings[1]
    assert not load(config(tmp_path, "  max_clip_seconds: 30")).warnings


def test_a_renamed_option_set_twice_keeps_the_new_name(tmp_path: Path) -> None:
    """chunk_format next to clip_format: clip_format wins and the warning says so."""
    settings = load(config(tmp_path, "  chunk_format: wav\n  clip_format: mp3"))
    assert settings.audio.clip_format == "mp3"
    (warning,) = settings.warnings
    assert warning == ("audio.chunk_format: renamed audio.clip_format, which is set too: "
                       "audio.chunk_format is ignored")


def test_check_prints_the_warnings(tmp_path: Path) -> None:
    """``mimo-watchd check`` shows a retired option as a warning and still passes."""
    path = config(tmp_path, "  max_chunk_seconds: 120")
    for folder in ("inbox", "processed", "failed"):
        (tmp_path / folder).mkdir()
    r = subprocess.run([sys.executable, "-m", "mimo_watchd", "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=60, check=False,
                       env={"MIMO_API_KEY": "sk-check", "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert f"{path}: warning: audio.max_chunk_seconds: no longer an option" in r.stderr


def test_bad_formats_and_margins_are_reported_with_their_paths(tmp_path: Path) -> None:
    """An unknown format, a format named twice, no format, and margins wider than half the
    skipped silence: each reported with its path."""
    for formats, message in (("[txt, docx]", "formats[1]: must be one of txt, json, srt, vtt; "
                                             "got 'docx'"),
                             ("[srt, srt]", "formats: srt named more than once"),
                             ("[]", "formats: name at least one of txt, json, srt, vtt")):
        with pytest.raises(ConfigError) as caught:
            load(config(tmp_path, "  skip_silence: true", f"    formats: {formats}\n"))
        assert caught.value.problems == [f"watches[0].{message}"]
    with pytest.raises(ConfigError) as caught:
        load(config(tmp_path, "  skip_silence_seconds: 0.5\n  silence_margin_seconds: 0.3"))
    assert caught.value.problems == [
        "audio.skip_silence_seconds: 0.5 is less than twice audio.silence_margin_seconds "
        "(0.3): the margins would fill the silence"]
    watch = load(config(tmp_path, "  skip_silence: true", "    formats: [vtt, txt]\n")).watches[0]
    assert watch.formats == ("vtt", "txt") and watch.subtitles


def test_every_audio_option_reaches_the_audio_layer() -> None:
    """Each audio option (set away from its default) is the audio layer's parameter of the same
    name; the request limit comes from api.max_request_b64_chars."""
    changed = {"max_clip_seconds": 45.0, "subtitle_clip_seconds": 9.0, "clip_format": "wav",
               "max_sample_rate": 16000, "skip_silence": False, "skip_silence_seconds": 3.5,
               "silence_margin_seconds": 0.25, "speech_above_floor_db": 12.0,
               "overlap_seconds": 1.0}
    assert set(changed) == {f.name for f in dataclasses.fields(AudioSettings)}
    params = audio_params(AudioSettings(**changed), 123_456)
    assert {k: getattr(params, k) for k in changed} == changed
    assert params.max_b64_chars == 123_456
    defaults = audio_params(AudioSettings(), 9_500_000)
    assert defaults == AudioParams()  # the configuration's defaults are the layer's own


def counters(metrics: Metrics) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(metrics.render().decode())
            for s in f.samples if s.name.startswith("mimo_watchd_") and not s.labels}


def test_audio_counters_count_transcribed_files_only() -> None:
    """A done file adds its audio, sent seconds and clips (and a no-speech file one to its
    counter); a duplicate or a failure adds none."""
    m = Metrics()
    m.observe_job("done", 1.0, {"audio_seconds": 60.5, "sent_seconds": 20.25, "clips": 2,
                                "no_speech": False})
    m.observe_job("done", 0.2, {"audio_seconds": 12.0, "sent_seconds": 0, "clips": 0,
                                "no_speech": True})
    m.observe_job("duplicate", 0.1, {"audio_seconds": 60.5, "sent_seconds": 0, "clips": 0,
                                     "no_speech": False})
    m.observe_job("failed", 0.1, {"audio_seconds": None, "sent_seconds": None, "clips": 0})
    c = counters(m)
    assert (c["mimo_watchd_audio_seconds_total"], c["mimo_watchd_sent_audio_seconds_total"],
            c["mimo_watchd_clips_total"], c["mimo_watchd_no_speech_files_total"]) == (
        72.5, 20.25, 2, 1)
