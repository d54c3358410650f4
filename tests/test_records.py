"""The typed job records render exactly what earlier versions wrote, and read it back."""

from __future__ import annotations

import json
from pathlib import Path

from mimo_watchd import records, timeline
from mimo_watchd.audio import AudioInfo, AudioSummary
from mimo_watchd.errors import PermanentApiError
from mimo_watchd.outputs import dumps
from mimo_watchd.records import Failed, Skipped, Transcribed
from mimo_watchd.transcription import ChunkResult, TranscriptResult, segments, sum_usage

# What version 0.1.0 (before the records) wrote for the result built in ``result()``.
SIDECAR_0_1_0 = (
    '{"schema": "mimo-watchd/transcript@1", "source": {"path": "/out/a b.wav", '
    '"original_path": "/in/a b.wav", "sha256": "' + "ab" * 32 + '", "bytes": 640044, '
    '"format": "wav", "codec": "pcm_s16le", "duration_seconds": 20.0}, '
    '"transcript": "你好 world", "no_speech": false, "language": "auto", '
    '"model": "mimo-v2.5-asr", "usage": {"seconds": 23, "prompt_tokens": 150, '
    '"completion_tokens": 9, "total_tokens": 249, "audio_tokens": 140}, "chunks": [{"index": 0, '
    '"start": 0.0, "end": 12.346, "request_id": "req-a", "usage": {"seconds": 13, '
    '"prompt_tokens": 150, "completion_tokens": 9, "total_tokens": 159, "audio_tokens": 140}, '
    '"attempts": 2, "from_journal": false}, {"index": 1, "start": 10.346, "end": 20.0, '
    '"request_id": null, "usage": {"seconds": 10, "total_tokens": 90}, "attempts": 0, '
    '"from_journal": true}], "timing": {"arrived_at": "2024-12-31T23:59:59Z", '
    '"started_at": "2025-01-01T00:00:00.000Z", "finished_at": "2025-01-01T00:00:05.500Z", '
    '"api_seconds": 1.235}, "tool": {"name": "mimo-watchd", "version": "0.1.0"}}')
ERROR_0_1_0 = (
    '{"schema": "mimo-watchd/error@1", "source": {"path": "/failed/x.wav", '
    '"original_path": "/in/x.wav", "sha256": "' + "cd" * 32 + '"}, '
    '"reason": "HTTP 400: bad audio", "error": "PermanentApiError", "http_status": 400, '
    '"api_error": {"error": {"message": "bad"}}, "request_id": "req-x", "attempts": 1, '
    '"failed_at": "2026-12-01T23:12:27Z", "tool": {"name": "mimo-watchd", "version": "0.1.0"}}')


# The same transcript as 0.2 writes it (transcript@2): the first clip left out 5 s of silence
# inside, the second was cut without a pause and repeats the first one's last 2 s ("好").
# Usage is kept as the answers sent it (issue 13 item 4): the second answer's missing fields
# are null, not left out, and the total says it is incomplete.
SIDECAR_2 = (
    '{"schema": "mimo-watchd/transcript@2", "source": {"path": "/out/a b.wav", '
    '"original_path": "/in/a b.wav", "sha256": "' + "ab" * 32 + '", "bytes": 640044, '
    '"format": "wav", "codec": "pcm_s16le", "duration_seconds": 20.0}, '
    '"transcript": "你好 world", "no_speech": false, "no_speech_reason": null, '
    '"language": "auto", "model": "mimo-v2.5-asr", "audio_seconds": 20.0, '
    '"sent_seconds": 17.0, "levels": {"floor_db": -71.2, "peak_db": -6.0, '
    '"silence_db": -61.2}, "usage": {"seconds": 23, "prompt_tokens": 150, '
    '"completion_tokens": 9, "total_tokens": 249, "audio_tokens": 140, "complete": false}, '
    '"segments": [{"start": 0.0, "end": 12.346, "text": "你好", '
    '"pieces": [[0.0, 4.5], [9.5, 12.346]]}, {"start": 12.346, "end": 20.0, '
    '"text": "world", "pieces": [[12.346, 20.0]]}], '
    '"chunks": [{"index": 0, "start": 0.0, "end": 12.346, "sent_seconds": 7.346, '
    '"request_id": "req-a", "usage": {"seconds": 13, "prompt_tokens": 150, '
    '"completion_tokens": 9, "total_tokens": 159, "audio_tokens": 140}, "attempts": 2, '
    '"from_journal": false}, {"index": 1, "start": 10.346, "end": 20.0, '
    '"sent_seconds": 9.654, "request_id": null, "usage": {"seconds": 10, '
    '"prompt_tokens": null, "completion_tokens": null, "total_tokens": 90, '
    '"audio_tokens": null}, '
    '"attempts": 0, "from_journal": true}], "timing": {"arrived_at": "2024-12-31T23:59:59Z", '
    '"started_at": "2025-01-01T00:00:00.000Z", "finished_at": "2025-01-01T00:00:05.500Z", '
    '"api_seconds": 1.235}, "tool": {"name": "mimo-watchd", "version": "0.1.0"}}')


def result() -> TranscriptResult:
    chunks = [
        ChunkResult(index=0, start=0.0, end=12.3456, text="你好", request_id="req-a",
                    usage={"seconds": 13, "prompt_tokens": 150, "completion_tokens": 9,
                           "total_tokens": 159, "prompt_tokens_details": {"audio_tokens": 140}},
                    attempts=2, api_seconds=1.23456, overlapped=False,
                    pieces=((0.0, 4.5), (9.5, 12.3456))),
        ChunkResult(index=1, start=10.3456, end=20.0, text="好 world", request_id=None,
                    usage={"seconds": 10, "total_tokens": 90}, attempts=0, api_seconds=0.0,
                    overlapped=True, from_journal=True, overlap_seconds=2.0),
    ]
    path = Path("/in/a b.wav")
    return TranscriptResult(
        path=path, sha256="ab" * 32,
        info=AudioInfo(str(path), "wav", "pcm_s16le", 20.00049, 16000, 1, 640044),
        text="你好 world", language="auto", model="mimo-v2.5-asr", chunks=chunks,
        started_at="2025-01-01T00:00:00.000Z", finished_at="2025-01-01T00:00:05.500Z",
        api_seconds=1.23456, usage=sum_usage(chunks), segments=segments(chunks),
        summary=AudioSummary(audio_seconds=20.0, sent_seconds=17.0, clips=2, floor_db=-71.234,
                             peak_db=-6.02, silence_db=-61.234, no_speech=None))


def compact(doc: object) -> str:
    return json.dumps(doc, ensure_ascii=False)


def test_the_sidecar_holds_segments_in_source_time() -> None:
    """A transcript renders transcript@2: segments (an overlapped clip's repeated words and
    time belong to the clip before), seconds of audio and sent, levels, in a fixed order."""
    record = Transcribed.from_result(result(), path="/out/a b.wav", original_path="/in/a b.wav",
                                     arrived_at="2024-12-31T23:59:59Z")
    assert compact(record.to_json()) == SIDECAR_2
    assert dumps(record.to_json()) == dumps(json.loads(SIDECAR_2))
    assert compact(Transcribed.from_json(json.loads(SIDECAR_2)).to_json()) == SIDECAR_2
    assert record.log_fields() == {
        "audio_seconds": 20.0, "sent_seconds": 17.0, "billed_seconds": 23, "tokens": 249,
        "usage_complete": False, "clips": 2, "api_calls": 2, "no_speech": False}


def test_stored_results_read_back_unchanged() -> None:
    """Sidecars (of 0.1.0 and of now), error files and skip notes render back identically."""
    for kind, text in (("done", SIDECAR_0_1_0), ("done", SIDECAR_2), ("failed", ERROR_0_1_0),
                       ("skipped", '{"duplicate_of": "/out/a.wav"}')):
        assert compact(records.from_json(kind, json.loads(text)).to_json()) == text


def test_a_transcript_of_0_1_spans_the_whole_recording() -> None:
    """A result stored by 0.1 (no segments) times its text over the whole recording, and its
    line says what it knew (no seconds sent)."""
    record = Transcribed.from_json(json.loads(SIDECAR_0_1_0))
    (whole,) = timeline.of_document(json.loads(SIDECAR_0_1_0))
    assert (whole.start, whole.end, whole.text, whole.pieces) == (0.0, 20.0, "你好 world",
                                                                  ((0.0, 20.0),))
    assert record.log_fields()["audio_seconds"] == 20.0
    assert record.log_fields()["sent_seconds"] is None


def test_a_reused_transcript_names_its_original_last() -> None:
    """A duplicate keeps the transcript (and its schema), takes its own paths and arrival,
    appends ``duplicate_of`` (the original's path), and says it sent and paid nothing."""
    for stored in (SIDECAR_0_1_0, SIDECAR_2):
        original = Transcribed.from_json(json.loads(stored))
        copy = original.reused(path="/out/c.wav", original_path="/in/c.wav", arrived_at="t9")
        doc = copy.to_json()
        assert list(doc)[-1] == "duplicate_of" and doc["duplicate_of"] == "/out/a b.wav"
        assert (doc["source"]["path"], doc["source"]["original_path"]) == ("/out/c.wav",
                                                                           "/in/c.wav")
        assert doc["timing"]["arrived_at"] == "t9" and doc["transcript"] == "你好 world"
        assert doc["schema"] == json.loads(stored)["schema"]
        line = copy.log_fields()
        assert (line["sent_seconds"], line["billed_seconds"], line["clips"]) == (0, 0, 0)
        assert copy.outcome == "duplicate" and Skipped(None).outcome == "skipped"


def test_an_error_record_holds_what_the_api_said() -> None:
    """A failure renders the API's status, body and request id, in 0.1.0's order."""
    error = PermanentApiError("HTTP 400: bad audio", status=400,
                              body={"error": {"message": "bad"}}, request_id="req-x")
    record = Failed.from_error(error, path="/failed/x.wav", original_path="/in/x.wav",
                               attempts=1, sha256="cd" * 32)
    doc = record.to_json()
    doc["failed_at"] = "2026-12-01T23:12:27Z"
    assert compact(doc) == ERROR_0_1_0
    assert record.outcome == "failed" and record.log_fields()["reason"] == "HTTP 400: bad audio"
