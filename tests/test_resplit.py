"""The transcriber's decisions on one answer, in milliseconds: whether to re-split it, what a
journal entry is worth, and what a file's usage adds up to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mimo_watchd.audio import AudioInfo
from mimo_watchd.billing import Price
from mimo_watchd.protocol import parse_completion
from mimo_watchd.records import Transcribed
from mimo_watchd.transcription import (
    ChunkResult,
    Discarded,
    TranscriptResult,
    journaled,
    resplit_reason,
    sum_usage,
)
from tests.test_protocol import ERROR_401, PUBLISHED, UNWRAPPED_402


def answer(text: str, finish: str = "stop") -> dict[str, Any]:
    raw: dict[str, Any] = {**PUBLISHED, "choices": [{"index": 0, "finish_reason": finish,
                                                      "message": {"content": text}}]}
    return raw


def test_an_ordinary_answer_is_kept() -> None:
    """A stopped answer whose text fits its audio is no reason to re-split."""
    assert resplit_reason(parse_completion(PUBLISHED), 4.0) == (None, "")


def test_answers_that_stopped_short_are_re_split() -> None:
    """length and repetition_truncation re-split, whatever the text."""
    for finish in ("length", "repetition_truncation"):
        why, detail = resplit_reason(parse_completion(answer("Good morning.", finish)), 30.0)
        assert why == finish and f"finish_reason {finish}" in detail


def test_a_looping_answer_is_re_split() -> None:
    """A stopped answer that loops is re-split, and the reason names the phrase."""
    t = parse_completion(answer("Good morning. " + "Thank you. " * 60))
    why, detail = resplit_reason(t, 20.0)
    assert why == "looping" and detail == ("looping output: 'thank you' 60 times in 20.0 s of "
                                           "audio")


class DictJournal:
    """A journal in a dict (what the ledger does, without the ledger)."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = entries

    def lookup(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def record(self, key: str, raw: dict[str, Any]) -> None:
        self.entries[key] = raw


def test_a_journaled_error_or_broken_answer_is_no_answer() -> None:
    """An error body or a broken answer an earlier version journaled is sent again, not
    replayed (a journaled 401 would otherwise pause the daemon for ever)."""
    journal = DictJournal({"a": ERROR_401, "b": UNWRAPPED_402, "c": {"id": "x"},
                           "d": PUBLISHED})
    assert [journaled(journal, k) is None for k in "abcde"] == [True, True, True, False, True]
    found = journaled(journal, "d")
    assert found is not None and found.text.startswith("Good morning")


def chunk(usage: dict[str, Any], discarded: tuple[Discarded, ...] = ()) -> ChunkResult:
    return ChunkResult(index=0, start=0.0, end=4.0, text="x", request_id=None, usage=usage,
                       attempts=1, api_seconds=0.1, overlapped=False, discarded=discarded)


def test_usage_sums_as_sent_and_says_when_incomplete() -> None:
    """Float seconds add up as floats; a field no answer gave is None; one answer without
    usage makes the total incomplete; a discarded (re-split) answer was billed and counts."""
    full = PUBLISHED["usage"]
    assert sum_usage([chunk(full), chunk(full)]) == {
        "seconds": 8, "prompt_tokens": 92, "completion_tokens": 40, "total_tokens": 132,
        "audio_tokens": 50, "complete": True}
    floats = sum_usage([chunk({**full, "seconds": 4.6})] * 3)
    assert floats["seconds"] == 13.8 and floats["complete"] is True
    partial = sum_usage([chunk(full), chunk({})])
    assert partial["seconds"] == 4 and partial["complete"] is False
    assert sum_usage([chunk({"total_tokens": 9})]) == {
        "seconds": None, "prompt_tokens": None, "completion_tokens": None, "total_tokens": 9,
        "audio_tokens": None, "complete": False}
    lost = Discarded(reason="looping", detail="", start=0.0, end=8.0, request_id=None,
                     usage={**full, "seconds": 8}, attempts=1, from_journal=False)
    assert sum_usage([chunk(full, (lost,)), chunk(full)])["seconds"] == 16


def test_the_sidecar_says_why_a_chunk_was_re_split_and_what_was_paid() -> None:
    """Re-split chunks carry the reason; the first keeps the discarded answer, whose seconds
    count in the usage, the cost and the calls; a stored record renders back the same."""
    full = PUBLISHED["usage"]
    lost = Discarded(reason="looping", detail="looping output: 'thank you' 60 times in 8.0 s "
                     "of audio", start=0.0, end=8.0, request_id="r0",
                     usage={**full, "seconds": 8}, attempts=1, from_journal=False)
    first = chunk(full, (lost,))
    first.resplit = ("looping",)
    second = ChunkResult(index=1, start=4.0, end=8.0, text="y", request_id="r2", usage={},
                         attempts=2, api_seconds=0.1, overlapped=False, resplit=("looping",),
                         looping="looping output: 'y' 9 times in 4.0 s of audio")
    path = Path("/in/a.wav")
    result = TranscriptResult(
        path=path, sha256="ab" * 32, info=AudioInfo(path, "wav", "pcm_s16le", 8.0, 16000, 1, 9),
        text="x y", language="auto", model="mimo-v2.5-asr", chunks=[first, second],
        started_at="t0", finished_at="t1", api_seconds=0.2, usage=sum_usage([first, second]))
    record = Transcribed.from_result(result, path="/out/a.wav", original_path="/in/a.wav",
                                     price=Price(0.5, "CNY"))
    doc = record.to_json()
    one, two = doc["chunks"]
    assert one["resplit"] == ["looping"] and two["resplit"] == ["looping"]
    assert one["discarded"][0]["reason"] == "looping" and "discarded" not in two
    assert one["discarded"][0]["usage"]["seconds"] == 8 and "looping" not in one
    assert two["looping"].startswith("looping output") and two["usage"]["seconds"] is None
    assert doc["usage"]["seconds"] == 12 and doc["usage"]["complete"] is False
    assert doc["cost"]["billed_seconds"] == 12 and doc["cost"]["complete"] is False
    assert record.log_fields()["api_calls"] == 4 and record.log_fields()["usage_complete"] is False
    assert Transcribed.from_json(json.loads(json.dumps(doc))).to_json() == doc


def test_a_file_with_no_paid_answer_sums_to_nothing_paid() -> None:
    """A file sent nowhere (no speech) paid nothing: every usage field is 0, and complete."""
    assert sum_usage([]) == {"seconds": 0, "prompt_tokens": 0, "completion_tokens": 0,
                             "total_tokens": 0, "audio_tokens": 0, "complete": True}
