"""The protocol layer on bytes and dicts: Xiaomi's published bodies and streams, odd ones, errors
inside a 200, usage as sent, and keys scrubbed from whatever the API says."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mimo_watchd.errors import (
    AudioError,
    OperatorError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)
from mimo_watchd.protocol import (
    StreamedAnswer,
    assemble_sse,
    classify,
    clean_text,
    error_in_body,
    parse_completion,
    read_usage,
    request_body,
    retry_after_seconds,
    scrub,
)

# mimo-api.md s.2: Xiaomi's published non-streaming answer, byte for byte in content.
PUBLISHED: dict[str, Any] = {
    "id": "9f51eba459dd4dfdabb31cabba0cb7dc",
    "choices": [{"finish_reason": "stop", "index": 0,
                 "message": {"content": "Good morning. Could you tell me what the weather "
                                        "will be like today?",
                             "role": "assistant", "audio": None, "tool_calls": None,
                             "audio_tokens": []}}],
    "created": 1780398283, "model": "mimo-v2.5-asr", "object": "chat.completion",
    "usage": {"completion_tokens": 20, "prompt_tokens": 46, "total_tokens": 66,
              "completion_tokens_details": {"reasoning_tokens": 0},
              "prompt_tokens_details": {"audio_tokens": 25, "cached_tokens": 45},
              "seconds": 4},
}
TEXT = PUBLISHED["choices"][0]["message"]["content"]


def published_stream(*, done: bool = True, usage: bool = True, finish: bool = True
                     ) -> list[str]:
    """mimo-api.md s.3: role chunk, content chunks, finish chunk, usage chunk, [DONE]."""
    base = {"id": PUBLISHED["id"], "object": "chat.completion.chunk",
            "created": PUBLISHED["created"], "model": "mimo-v2.5-asr"}

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + json.dumps({**base, "choices": choices, **extra})

    def delta(content: str | None, role: str | None, reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": {"content": content, "role": role},
                "finish_reason": reason}

    lines = [event([delta("", "assistant", None)]), ""]
    for piece in ("Good", " morning", ".", " Could", " you", " tell", " me", " what", " the",
                  " weather", " will", " be", " like", " today", "?"):
        lines += [event([delta(piece, None, None)]), ""]
    if finish:
        lines += [event([delta(None, None, "stop")], usage=None), ""]
    if usage:
        lines += [event([], usage=PUBLISHED["usage"]), ""]
    if done:
        lines += ["data: [DONE]", ""]
    return lines


def test_request_body_has_exactly_the_documented_fields() -> None:
    """One user message, one input_audio part as a data URL, asr_options, stream."""
    body = json.loads(request_body(b"RIFF....", "audio/wav", model="mimo-v2.5-asr",
                                   language="zh", stream=True, max_b64_chars=100))
    assert set(body) == {"model", "messages", "asr_options", "stream"}
    (part,) = body["messages"][0]["content"]
    assert part == {"type": "input_audio", "input_audio": {
        "data": "data:audio/wav;base64," + base64.b64encode(b"RIFF....").decode()}}
    assert body["asr_options"] == {"language": "zh"} and body["stream"] is True


def test_request_body_refuses_audio_over_the_limit() -> None:
    """Audio whose base64 is longer than the limit is refused before anything is sent."""
    with pytest.raises(AudioError, match="too large"):
        request_body(b"x" * 76, "audio/wav", model="m", language="auto", stream=False,
                     max_b64_chars=100)


def test_published_answer() -> None:
    """Xiaomi's example reads as its text, id, stop and usage as sent."""
    t = parse_completion(PUBLISHED)
    assert t.text == TEXT and t.request_id == PUBLISHED["id"] and t.finish_reason == "stop"
    assert t.usage == PUBLISHED["usage"] and not t.truncated


@pytest.mark.parametrize("reason", ["length", "repetition_truncation"])
def test_truncated_answers_are_answers(reason: str) -> None:
    """length and repetition_truncation are returned (the caller re-splits), not raised."""
    raw = json.loads(json.dumps(PUBLISHED))
    raw["choices"][0]["finish_reason"] = reason
    t = parse_completion(raw)
    assert t.truncated and t.finish_reason == reason and t.text == TEXT


def test_content_filter_is_permanent() -> None:
    """finish_reason content_filter inside a 200 is a moderation block (as 421)."""
    raw = json.loads(json.dumps(PUBLISHED))
    raw["choices"][0]["finish_reason"] = "content_filter"
    with pytest.raises(PermanentApiError, match="moderation"):
        parse_completion(raw)


def test_a_body_that_is_no_completion_is_transient() -> None:
    """A 200 body without choices (and without an error) is a transient failure."""
    with pytest.raises(TransientApiError, match="no completion"):
        parse_completion({"id": "x", "object": "chat.completion"})


# mimo-api.md s.4: the published error bodies, here inside an HTTP 200 (s.7).
ERROR_401 = {"error": {"message": "Invalid API Key", "param": "Please provide valid API Key",
                       "code": "401", "type": "invalid_key"}}
ERROR_429 = {"error": {"code": "429", "message": "Too many requests", "type": "limitation"}}
ERROR_500 = {"error": {"code": "500", "message": "Internal Server Error", "param": "",
                       "type": ""}}
ERROR_421 = {"error": {"code": "421", "message": "Moderation Block", "param": "high risk",
                       "type": "content_filter"}}
UNWRAPPED_402 = {"type": "server_error",
                 "message": "Upstream request failed: Insufficient account funds"}


@pytest.mark.parametrize(("body", "error", "status", "pauses"), [
    (ERROR_401, OperatorError, 401, True),
    ({"error": {**ERROR_401["error"], "code": "402", "message": "Insufficient funds"}},
     OperatorError, 402, True),
    (ERROR_429, RateLimitedError, 429, False),
    (ERROR_500, TransientApiError, 500, False),
    (ERROR_421, PermanentApiError, 421, False),
    (UNWRAPPED_402, OperatorError, 500, True),
    ({"error": "something broke"}, TransientApiError, 500, False),
], ids=["401", "402", "429", "500", "421", "402-unwrapped", "bare-string"])
def test_an_error_inside_a_200_is_classified_by_its_code(
        body: dict[str, Any], error: type[Exception], status: int, pauses: bool) -> None:
    """A 200 whose body is an error is that error, as its code would be as a status."""
    found = error_in_body(body)
    assert type(found) is error and found.status == status and found.pauses is pauses
    assert str(found).startswith("HTTP 200 with an error body")
    with pytest.raises(error):
        parse_completion(body)


def test_an_answer_is_no_error() -> None:
    """A completion (also with ``error: null``) holds no error."""
    assert error_in_body(PUBLISHED) is None
    assert error_in_body({**PUBLISHED, "error": None}) is None


def test_published_stream_with_and_without_done() -> None:
    """The published stream is the published answer; without [DONE] it still is (s.7), and
    says so."""
    for done in (True, False):
        raw = assemble_sse(published_stream(done=done))
        t = parse_completion(raw)
        assert t.text == TEXT and t.usage == PUBLISHED["usage"] and t.finish_reason == "stop"
        assert raw["stream_done"] is done and raw["id"] == PUBLISHED["id"]


def test_a_stream_without_its_usage_chunk_is_whole_with_usage_unknown() -> None:
    """The finish chunk makes the transcript whole; a missing usage chunk leaves usage unknown."""
    t = parse_completion(assemble_sse(published_stream(done=False, usage=False)))
    assert t.text == TEXT and read_usage(t.usage)["seconds"] is None


def test_a_stream_without_its_finish_chunk_is_transient() -> None:
    """Content without a finish chunk may be cut short: a transient failure."""
    with pytest.raises(TransientApiError, match="finish chunk"):
        assemble_sse(published_stream(done=False, usage=False, finish=False))
    answer = StreamedAnswer()
    for line in published_stream(finish=False, usage=False, done=False):
        answer.feed(line)
    assert not answer.finished


def test_stream_comments_fields_and_lines_after_done_are_ignored() -> None:
    """Keep-alive comments and other SSE fields carry nothing; nothing after [DONE] counts."""
    lines = [": keep-alive", "event: message", *published_stream(), "data: {not json"]
    assert parse_completion(assemble_sse(lines)).text == TEXT


def test_an_error_event_in_a_stream_is_classified() -> None:
    """A stream that carries an error event raises that error."""
    with pytest.raises(OperatorError) as info:
        assemble_sse([published_stream()[0], "data: " + json.dumps(ERROR_401)])
    assert info.value.status == 401


def test_a_malformed_event_is_transient() -> None:
    """An event that is not JSON is a transient failure."""
    with pytest.raises(TransientApiError, match="malformed"):
        assemble_sse(["data: {oops"])


@pytest.mark.parametrize(("status", "body", "error"), [
    (400, {"error": {"code": "400", "message": "Param Incorrect", "param": "x", "type": ""}},
     PermanentApiError),
    (401, ERROR_401, OperatorError),
    (402, UNWRAPPED_402, OperatorError),
    (403, {"error": {"code": "403", "message": "Illegal access", "type": "illegal_access"}},
     OperatorError),
    (404, "<html><center><h1>404 Not Found</h1></center><hr><center>openresty</center></html>",
     OperatorError),
    (421, ERROR_421, PermanentApiError),
    (429, ERROR_429, RateLimitedError),
    (500, "", TransientApiError),
    (502, "<html>bad gateway</html>", TransientApiError),
    (503, ERROR_500, TransientApiError),
    (301, "", OperatorError),
    (413, "", PermanentApiError),
])
def test_classify_statuses(status: int, body: Any, error: type[Exception]) -> None:
    """Each status maps as mimo-api.md s.4's table says; bodies may be JSON, HTML or empty."""
    text = body if isinstance(body, str) else json.dumps(body)
    found = classify(status, text)
    assert type(found) is error and found.status == status


def test_a_redirect_names_where_it_points() -> None:
    """A 3xx is a wrong base_url: the error says where the API redirects to."""
    found = classify(308, "", location="https://api.example/v1/chat/completions")
    assert "redirects to https://api.example/v1/chat/completions" in str(found)
    assert "api.base_url" in str(found) and found.pauses


def test_retry_after_is_kept() -> None:
    """A Retry-After given with a 429 or 503 travels with the error."""
    found = classify(429, "", retry_after=7.0)
    assert isinstance(found, RateLimitedError) and found.retry_after == 7.0
    assert retry_after_seconds("7", 0.0) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_seconds("soon", 0.0) is None and retry_after_seconds(None, 0.0) is None


KEY = "sk-live-0123456789abcdef"
OTHER_KEY = "custom-gateway-secret-42"


@pytest.mark.parametrize("status", [400, 401, 500])
def test_a_body_echoing_the_key_is_scrubbed(status: int) -> None:
    """The configured key and anything key-like never reach an error's message or body."""
    body = {"error": {"code": str(status),
                      "message": f"Incorrect API key provided: {KEY}; also {OTHER_KEY}",
                      "param": "tp-abcdef123456 and sk-abc1****wxyz", "type": ""}}
    found = classify(status, json.dumps(body), secrets=[OTHER_KEY])
    shown = json.dumps(found.to_dict()) + str(found) + found.reason
    for secret in (KEY, OTHER_KEY, "tp-abcdef123456", "sk-abc1****wxyz", "0123456789abcdef"):
        assert secret not in shown
    assert "Incorrect API key provided: sk-***; also ***" in found.reason


def test_a_non_json_body_echoing_the_key_is_scrubbed() -> None:
    """An HTML or text body is scrubbed before its excerpt is kept."""
    found = classify(401, f"<html>bad key {KEY}</html>")
    assert KEY not in json.dumps(found.to_dict()) and "sk-***" in str(found)


def test_scrub_leaves_ordinary_words_alone() -> None:
    """Words that merely contain 'sk-' or 'tp-' (task-force, desk-lamp) stay as they are."""
    text = "a task-force at the desk-lamp, http-proxy, sk-1, and a key sk-abcd1234"
    assert scrub(text) == "a task-force at the desk-lamp, http-proxy, sk-1, and a key sk-***"
    assert scrub({"a": [KEY, 3]}, [KEY]) == {"a": ["***", 3]}


def test_usage_is_kept_as_sent_and_unknown_stays_unknown() -> None:
    """Float seconds stay floats; missing fields are None; audio tokens come from details."""
    assert read_usage(PUBLISHED["usage"]) == {"seconds": 4, "prompt_tokens": 46,
                                              "completion_tokens": 20, "total_tokens": 66,
                                              "audio_tokens": 25}
    odd = read_usage({"seconds": 4.6, "prompt_tokens": "46", "total_tokens": True})
    assert odd == {"seconds": 4.6, "prompt_tokens": None, "completion_tokens": None,
                   "total_tokens": None, "audio_tokens": None}
    assert read_usage(None) == dict.fromkeys(odd)
    assert read_usage({"audio_tokens": 7})["audio_tokens"] == 7  # our sidecar's flat form


def test_clean_text_strips_model_tags() -> None:
    """<think>…</think> and language tags never reach a transcript."""
    assert clean_text("<think>\nhm\n</think>\n<english>Hello.</english>") == "Hello."
    assert clean_text(None) == ""
