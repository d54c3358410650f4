"""Subtitles from segments: cues split where reading pauses (also in text without spaces),
timed by length within a segment and through left-out silences, valid SRT and WebVTT (parsed
back with the ``srt`` and ``webvtt-py`` libraries), written as sidecars a watch asks for."""

from __future__ import annotations

import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import srt
import webvtt

from mimo_watchd import outputs, placement, subtitles
from mimo_watchd.config import WatchSettings
from mimo_watchd.inputs import InputFile
from mimo_watchd.records import Transcribed
from mimo_watchd.subtitles import CUE_WIDTH, LINE_WIDTH, Cue, cues, width
from mimo_watchd.timeline import Segment
from tests.daemon_support import REPO

ENGLISH = ("Good morning. Could you tell me what the weather will be like today? I would like "
           "to go for a walk, if it does not rain, in the park near the river. Then we could "
           "have lunch together at the small place on the corner, the one with the blue door.")
CHINESE = ("今天天气很好，我们去公园散步吧。你觉得怎么样？我觉得很好，我们下午三点出发，好不好？"
           "然后一起去河边的小饭馆吃晚饭，那里的鱼很新鲜，价格也不贵。吃完饭我们再坐公交车回家。")


def parsed(cue_list: list[Cue]) -> tuple[list[tuple[float, float, str]], ...]:
    """The cues as the ``srt`` and ``webvtt`` libraries read them back: (start, end, text)."""
    from_srt = [(s.start.total_seconds(), s.end.total_seconds(), s.content)
                for s in srt.parse(subtitles.srt(cue_list))]
    from_vtt = [(_seconds(c.start), _seconds(c.end), html.unescape(c.text))
                for c in webvtt.from_buffer(io.StringIO(subtitles.vtt(cue_list)))]
    return from_srt, from_vtt


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_cues_parse_back_as_srt_and_vtt_in_order() -> None:
    """Latin and CJK text, markup characters, an empty segment and a left-out silence give
    cues that both libraries read back exactly, in order and within the recording."""
    segments = [
        Segment(0.3, 14.1, ENGLISH, ((0.3, 6.0), (9.0, 14.1))),
        Segment(14.1, 14.9, "", ((14.1, 14.9),)),
        Segment(17.2, 29.0, CHINESE, ((17.2, 29.0),)),
        Segment(29.0, 31.5, "a <b> & c --> d", ((29.0, 31.5),)),
    ]
    cue_list = cues(segments)
    assert len(cue_list) >= 6
    expected = [(c.start, c.end, "\n".join(c.lines)) for c in cue_list]
    from_srt, from_vtt = parsed(cue_list)
    assert from_srt == expected and from_vtt == expected
    times = [t for c in cue_list for t in (c.start, c.end)]
    assert times == sorted(times) and times[0] == 0.3 and times[-1] == 31.5
    assert all(c.end > c.start for c in cue_list)
    assert all(width(line) <= LINE_WIDTH for c in cue_list for line in c.lines)
    assert all(len(c.lines) <= 2 for c in cue_list)


def test_long_text_is_split_at_sentence_ends_first() -> None:
    """A segment wider than a cue is cut after full stops and question marks where they fit
    (after a comma in a sentence too long for one cue), every word kept once, in order."""
    cue_list = cues([Segment(0.0, 20.0, ENGLISH, ((0.0, 20.0),))])
    texts = [" ".join(c.lines) for c in cue_list]
    assert all(width(t) <= CUE_WIDTH for t in texts)
    assert " ".join(texts) == ENGLISH
    assert texts[:2] == ["Good morning. Could you tell me what the weather will be like today?",
                         "I would like to go for a walk, if it does not rain, in the park near "
                         "the river."]
    assert texts[2].endswith("on the corner,") and len(texts) == 4


def test_text_without_spaces_is_split_after_its_punctuation() -> None:
    """Chinese text (no spaces) is cut after 。？ or ，, never before a punctuation mark, each
    cue at most two lines of two-column characters, nothing lost."""
    cue_list = cues([Segment(0.0, 30.0, CHINESE, ((0.0, 30.0),))])
    texts = ["".join(c.lines) for c in cue_list]
    assert len(texts) >= 2 and "".join(texts) == CHINESE
    assert all(width(t) <= CUE_WIDTH for t in texts)
    assert all(t[-1] in "。？，" for t in texts), texts
    assert not any(line[0] in "。？，" for c in cue_list for line in c.lines)


def test_times_are_shared_by_length_and_skip_a_left_out_silence() -> None:
    """Two sentences of equal length in a clip whose 2 s of silence between them were left
    out: the first cue ends where the first piece ends, the second starts after the silence."""
    first = "Alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo."
    second = "Kilo juliett india hotel golf foxtrot echo delta charlie bravo alpha."
    assert width(first) == width(second) and width(first + " " + second) > CUE_WIDTH
    one, two = cues([Segment(10.0, 22.0, f"{first} {second}", ((10.0, 15.0), (17.0, 22.0)))])
    assert (one.start, one.end, two.start, two.end) == (10.0, 15.0, 17.0, 22.0)


def test_a_word_wider_than_a_cue_is_cut_to_fit() -> None:
    """A run of characters with no break at all still gives cues that fit."""
    word = "x" * 200
    cue_list = cues([Segment(0.0, 4.0, word, ((0.0, 4.0),))])
    assert "".join("".join(c.lines) for c in cue_list) == word
    assert all(width("".join(c.lines)) <= CUE_WIDTH for c in cue_list)


def document(text: str, segments: list[dict[str, Any]]) -> dict[str, Any]:
    """A transcript@2 sidecar document holding ``segments``."""
    return {
        "schema": "mimo-watchd/transcript@2",
        "source": {"path": "/p/a.wav", "original_path": "/i/a.wav", "sha256": "00", "bytes": 1,
                   "format": "wav", "codec": "pcm_s16le", "duration_seconds": 9.0},
        "transcript": text, "no_speech": not text, "no_speech_reason": None, "language": "auto",
        "model": "mimo-v2.5-asr", "audio_seconds": 9.0, "sent_seconds": 9.0, "levels": None,
        "usage": {"seconds": 9, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                  "audio_tokens": 0},
        "segments": segments, "chunks": [],
        "timing": {"arrived_at": None, "started_at": "t", "finished_at": "t", "api_seconds": 0},
        "tool": {"name": "mimo-watchd", "version": "0.1.0"}}


def test_sidecars_are_the_formats_asked_for_json_last() -> None:
    """A done set holds the formats asked for, written txt, srt, vtt, then the JSON; a
    transcript stored by 0.1 (no segments) gets one cue over the whole recording."""
    doc = document("alpha bravo.", [{"start": 1.0, "end": 4.0, "text": "alpha bravo.",
                                     "pieces": [[1.0, 4.0]]}])
    files = outputs.sidecar_files("done", doc, ("json", "vtt", "txt", "srt"))
    assert [s for s, _ in files] == [".txt", ".srt", ".vtt", ".json"]
    assert dict(files)[".srt"] == b"1\n00:00:01,000 --> 00:00:04,000\nalpha bravo.\n\n"
    assert [s for s, _ in outputs.sidecar_files("done", doc)] == [".txt", ".json"]
    old = {k: v for k, v in doc.items() if k not in ("no_speech_reason", "audio_seconds",
                                                      "sent_seconds", "levels", "segments")}
    old["schema"] = "mimo-watchd/transcript@1"
    (srt_file,) = outputs.sidecar_files("done", old, ("srt",))
    assert srt_file == (".srt", b"1\n00:00:00,000 --> 00:00:09,000\nalpha bravo.\n\n")
    assert outputs.sidecar_files("done", document("", []), ("srt", "vtt")) == [
        (".srt", b""), (".vtt", b"WEBVTT\n\n")]


def placed_set(tmp_path: Path, formats: tuple[str, ...], *, recorded_by_0_1: bool = False,
               ) -> list[str]:
    """Places ``a.wav`` with a watch writing ``formats`` (or by a plan as 0.1 recorded it,
    without formats); the names in the processed folder."""
    inbox, processed = tmp_path / "in", tmp_path / "done"
    inbox.mkdir(parents=True)
    (inbox / "a.wav").write_bytes(b"RIFF audio")
    watch = WatchSettings(path=inbox, processed_dir=processed, failed_dir=tmp_path / "failed",
                          formats=formats)
    with InputFile.open(inbox, inbox / "a.wav") as source:
        plan = placement.choose(watch, source.path, "done", identity=source.identity,
                                sha256=source.sha256())
        if recorded_by_0_1:
            old = plan.to_dict()
            del old["formats"]
            plan = placement.Plan.from_dict(json.loads(json.dumps(old)))
        doc = document("alpha.", [{"start": 0.0, "end": 1.0, "text": "alpha.",
                                   "pieces": [[0.0, 1.0]]}])
        placement.carry_out(plan, Transcribed.from_json(doc), source)
    return sorted(p.name for p in processed.iterdir())


def test_a_watch_writes_the_formats_it_names(tmp_path: Path) -> None:
    """The watch's formats are the plan's; a plan recorded before formats existed (resumed
    after an upgrade) writes the txt and JSON it was planned with."""
    assert placed_set(tmp_path / "1", ("srt", "txt")) == ["a.srt", "a.txt", "a.wav"]
    assert placed_set(tmp_path / "2", ("txt", "json", "srt"), recorded_by_0_1=True) == [
        "a.json", "a.txt", "a.wav"]


def test_a_stray_subtitle_file_moves_the_set_to_the_next_stem(tmp_path: Path) -> None:
    """A name of the set is taken by another file (here ``a.vtt``, whatever the watch
    writes): the sidecars keep the extension rather than share the stem with it."""
    processed = tmp_path / "done"
    processed.mkdir()
    (processed / "a.vtt").write_text("WEBVTT\n\n")
    names = placed_set(tmp_path, ("txt", "json"))
    assert names == ["a.vtt", "a.wav", "a.wav.json", "a.wav.txt"]
    assert (processed / "a.vtt").read_text() == "WEBVTT\n\n"
    assert re.fullmatch(r"alpha\.\n", (processed / "a.wav.txt").read_text())
    assert json.loads((processed / "a.wav.json").read_text())["transcript"] == "alpha."


def test_writing_sidecars_loads_no_audio_or_http_library() -> None:
    """``outputs`` (which status, retry and the hooks import for ``dumps``) renders every
    format, subtitles too, without loading PyAV, numpy or httpx."""
    code = ("import json, sys\n"
            "from mimo_watchd import outputs\n"
            "print(json.dumps(sorted(m for m in sys.modules\n"
            "                        if m.split('.')[0] in ('av', 'numpy', 'httpx'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert json.loads(out.stdout) == []
