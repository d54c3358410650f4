"""Operators' naming (issue 16 item 1): path templates checked at load with their key path,
rendered per file, and the naming rule applied to the set they give."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd import placement, templates
from mimo_watchd.config import WatchSettings, parse
from mimo_watchd.errors import ConfigError, JobError
from mimo_watchd.inputs import InputFile
from tests.test_placement import record_of


def _config(tmp_path: Path, **watch: Any) -> dict[str, Any]:
    return {"watches": [{"path": str(tmp_path / "inbox"), "processed_dir": str(tmp_path / "done"),
                         "failed_dir": str(tmp_path / "failed"), **watch}]}


@pytest.mark.parametrize(("template", "message"), [
    ("{stem}{suffix}", "unknown field {suffix}"),
    ("{stem.upper}", "unknown field {stem.upper}"),
    ("{stem!r}", "conversions are not supported"),
    ("{arrived}/{name}", "needs a date format"),
    ("/srv/{name}", "absolute"),
    ("../{name}", "leaves its folder"),
    ("a/../../{name}", "leaves its folder"),
    ("{relpath}/", "names no file"),
    ("{stem:d}", "cannot be rendered"),
    ("{name", "not a valid template"),
])
def test_a_bad_template_is_refused_at_load_with_its_key_path(
        tmp_path: Path, template: str, message: str) -> None:
    """Unknown fields, conversions, absolute or '..' results and malformed templates are
    config errors naming watches[0].processed_path."""
    with pytest.raises(ConfigError) as info:
        parse(_config(tmp_path, processed_path=template), base=tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("watches[0].processed_path: ")
    assert message in problem


def test_output_path_is_checked_the_same_way(tmp_path: Path) -> None:
    """output_path gets the same checks, under its own key."""
    with pytest.raises(ConfigError, match=r"watches\[0\]\.output_path: .*leaves its folder"):
        parse(_config(tmp_path, output_path="../x/{stem}"), base=tmp_path)


def test_a_template_that_could_land_inside_a_watch_is_refused(tmp_path: Path) -> None:
    """With processed_dir holding the watch, a template that may begin with the watch's name
    is refused; one that begins with a folder of its own is fine."""
    doc = _config(tmp_path, processed_path="{watch}/{name}")
    doc["watches"][0]["processed_dir"] = str(tmp_path)
    with pytest.raises(ConfigError, match=r"watches\[0\]\.processed_path: .*could put files "
                       r"inside the watched folder watches\[0\]\.path"):
        parse(doc, base=tmp_path)
    doc["watches"][0]["processed_path"] = "{relpath}/{name}"
    with pytest.raises(ConfigError, match="could put files inside"):
        parse(doc, base=tmp_path)
    doc["watches"][0]["processed_path"] = "done/{arrived:%Y}/{relpath}/{name}"
    assert parse(doc, base=tmp_path).watches[0].processed_path is not None


def test_rendering_normalises_and_refuses_a_name_that_climbs_out() -> None:
    """An empty {relpath} leaves no empty folder; a stem of '..' (a file named '...wav') used
    as a folder fails that file instead of leaving the processed folder."""
    values = {"stem": "call", "ext": ".wav", "name": "call.wav", "relpath": "",
              "watch": "in", "language": "zh", "arrived": templates._SAMPLES[0]["arrived"]}
    assert templates.render_path("{relpath}/{language}/./{name}", values) == "zh/call.wav"
    with pytest.raises(JobError, match="leaves its folder"):
        templates.render_path("{stem}/{name}", {**values, "stem": "..", "name": "...wav"})


def _opened(inbox: Path, rel: str, data: bytes = b"RIFF audio") -> InputFile:
    path = inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return InputFile.open(inbox, path)


def test_templates_place_the_whole_set_and_number_it_together(tmp_path: Path) -> None:
    """Audio by arrival month and sub-folder, sidecars by day in output_dir; a second
    recording of the same name takes -1 for its audio and its sidecars alike."""
    inbox, done, out = tmp_path / "inbox", tmp_path / "done", tmp_path / "out"
    watch = WatchSettings(path=inbox, processed_dir=done, failed_dir=tmp_path / "failed",
                          output_dir=out,
                          processed_path="{arrived:%Y/%m}/{relpath}/{stem}{ext}",
                          output_path="{arrived:%Y-%m-%d}/{language}-{stem}")
    naming = placement.Naming(language="zh", arrived_at="2026-12-01T23:30:00Z", timezone="UTC")
    placed = []
    for n in range(2):
        with _opened(inbox, "calls/call.wav", b"RIFF %d" % n) as source:
            plan = placement.choose(watch, source.path, "done", identity=source.identity,
                                    naming=naming)
            placed.append(placement.carry_out(plan, record_of(source, f"text {n}"), source))
    assert [p.audio for p in placed] == [done / "2026/12/calls/call.wav",
                                         done / "2026/12/calls/call-1.wav"]
    assert [p.files["txt"] for p in placed] == [out / "2026-12-01/zh-call.txt",
                                                out / "2026-12-01/zh-call-1.txt"]
    assert (out / "2026-12-01/zh-call-1.txt").read_text() == "text 1\n"
    assert not (inbox / "calls/call.wav").exists()


def test_arrival_dates_are_in_the_operators_zone(tmp_path: Path) -> None:
    """{arrived} is the arrival time in `timezone`: 23:30 UTC is the next day in Shanghai."""
    inbox = tmp_path / "inbox"
    watch = WatchSettings(path=inbox, processed_dir=tmp_path / "done",
                          failed_dir=tmp_path / "failed",
                          processed_path="{arrived:%Y-%m-%d}/{name}")
    with _opened(inbox, "a.wav") as source:
        shanghai = placement.layout(watch, source.path, "done", placement.Naming(
            arrived_at="2026-12-01T23:30:00Z", timezone="Asia/Shanghai"))
    assert shanghai.audio_dir == tmp_path / "done/2026-12-02"


def test_without_templates_the_layout_is_unchanged_and_failures_keep_it(tmp_path: Path) -> None:
    """No template: the folders it arrived in, sidecars beside the audio; a failed file goes
    to failed_dir under its own name whatever the templates say."""
    inbox = tmp_path / "inbox"
    watch = WatchSettings(path=inbox, processed_dir=tmp_path / "done",
                          failed_dir=tmp_path / "failed")
    with _opened(inbox, "sub/x.mp3") as source:
        plain = placement.layout(watch, source.path, "done")
        templated = replace(watch, processed_path="{arrived:%Y}/{name}")
        failed = placement.layout(templated, source.path, "failed")
    assert plain == placement.Layout(tmp_path / "done/sub", "x.mp3", tmp_path / "done/sub", "x")
    assert failed == placement.Layout(tmp_path / "failed/sub", "x.mp3", tmp_path / "failed/sub",
                                      "x")


def test_a_template_landing_in_the_watch_fails_the_file(tmp_path: Path) -> None:
    """Should a rendering lead into the watched folder after all, the file fails rather than
    being taken again forever."""
    inbox = tmp_path / "inbox"
    watch = WatchSettings(path=inbox, processed_dir=tmp_path, failed_dir=tmp_path / "failed",
                          processed_path="{relpath}/{name}")
    with _opened(inbox, "inbox/a.wav") as source, \
            pytest.raises(JobError, match="inside the watched folder"):
        placement.layout(watch, source.path, "done")


def test_a_name_that_is_not_utf8_keeps_its_bytes_through_a_template(tmp_path: Path) -> None:
    """A recording named b'\\xff\\xfe.wav' keeps those bytes in the folder and name the
    template gives, and its sidecars take its stem."""
    inbox = tmp_path / "inbox"
    watch = WatchSettings(path=inbox, processed_dir=tmp_path / "done",
                          failed_dir=tmp_path / "failed",
                          processed_path="{stem}/{arrived:%Y}-{name}")
    name = os.fsdecode(b"\xff\xfe.wav")
    with _opened(inbox, name) as source:
        plan = placement.choose(watch, source.path, "done", identity=source.identity,
                                naming=placement.Naming(arrived_at="2026-01-01T00:00:00Z"))
        placed = placement.carry_out(plan, record_of(source, "t"), source)
    assert placed.audio is not None
    assert os.fsencode(placed.audio).endswith(b"/done/\xff\xfe/2026-\xff\xfe.wav")
    assert os.fsencode(placed.files["txt"]).endswith(b"/done/\xff\xfe/2026-\xff\xfe.txt")
