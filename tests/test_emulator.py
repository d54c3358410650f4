"""The MiMo API emulator and its tone vocabulary, over real loopback HTTP with plain httpx."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mimo_watchd.emulator import FAULT_KINDS, Emulator, FaultRule, faults, tones
from mimo_watchd.emulator.faults import ERROR_BODIES, TEXT_PART_PARAM
from mimo_watchd.emulator.limits import AccountLimits
from tests.support import wait_for

KEY = {"api-key": "sk-test"}
WORDS = ["alpha", "bravo", "charlie"]
MakeEmulator = Callable[..., Emulator]


@pytest.fixture(autouse=True)
def no_leaked_emulator_threads() -> Iterator[None]:
    """Every emulator thread (server loop and connections) is gone once a test's emulators stop."""
    yield
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("mimo-emulator")]
    assert leaked == []


@pytest.fixture(scope="module")
def wav() -> bytes:
    """A wav of the three WORDS."""
    return tones.to_bytes(WORDS, "wav")


@pytest.fixture(scope="module")
def mp3() -> bytes:
    """An mp3 of the three WORDS."""
    return tones.to_bytes(WORDS, "mp3")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain httpx client (keep-alive, closed after the test)."""
    with httpx.Client(timeout=10) as client:
        yield client


def body_for(
    audio: bytes, mime: str = "audio/wav", *, stream: bool = False, **extra: Any
) -> dict[str, Any]:
    """A valid request body for ``audio`` as a data URL, plus ``extra`` top-level fields."""
    data = f"data:{mime};base64," + base64.b64encode(audio).decode()
    return {
        "model": "mimo-v2.5-asr",
        "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data}}]}
        ],
        "asr_options": {"language": "auto"},
        "stream": stream,
        **extra,
    }


def post(
    http: httpx.Client, emu: Emulator, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST ``body`` as JSON to the emulator's chat completions route."""
    return http.post(
        emu.url + "/chat/completions", json=body, headers=KEY if headers is None else headers
    )


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (comment lines skipped)."""
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def tokens(total: int, prompt: int | None = None) -> dict[str, int]:
    """A usage with ``total`` tokens, ``prompt`` of them prompt tokens (all by default)."""
    return {"total_tokens": total, "prompt_tokens": total if prompt is None else prompt}


def silence(seconds: float) -> np.ndarray:
    """Digital silence at 16 kHz."""
    return np.zeros(round(seconds * 16000), dtype=np.int16)


# -- success shapes ---------------------------------------------------------------------------


def test_success_shape_is_exactly_the_documented_one(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """A valid request gets the section-2 object, with the tone words as the transcript."""
    r = post(http, emulator, body_for(wav))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert list(data) == ["id", "object", "created", "model", "choices", "usage"]
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["object"] == "chat.completion" and data["model"] == "mimo-v2.5-asr"
    assert abs(data["created"] - time.time()) < 5
    assert data["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {
                "role": "assistant",
                "content": "alpha bravo charlie.",
                "audio": None,
                "tool_calls": None,
                "audio_tokens": [],
            },
        }
    ]
    assert set(data["usage"]) == {
        "completion_tokens",
        "prompt_tokens",
        "total_tokens",
        "completion_tokens_details",
        "prompt_tokens_details",
        "seconds",
    }
    call = emulator.calls[-1]
    assert call.ok and call.words == WORDS and call.request_id == data["id"]


@pytest.mark.parametrize(
    ("seconds", "audio_tokens", "billed"), [(4.0, 25, 4), (4.01, 26, 5), (0.5, 4, 1)]
)
def test_usage_follows_the_decoded_duration(
    emulator: Emulator,
    http: httpx.Client,
    seconds: float,
    audio_tokens: int,
    billed: int,
) -> None:
    """usage: audio_tokens = ceil(6.25 s), prompt = audio + 21, seconds = ceil(s); silence is ""."""
    r = post(http, emulator, body_for(tones.encode(silence(seconds), 16000)))
    data = r.json()
    assert data["choices"][0]["message"]["content"] == ""
    assert data["usage"] == {
        "completion_tokens": 1,
        "prompt_tokens": audio_tokens + 21,
        "total_tokens": audio_tokens + 22,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens_details": {"audio_tokens": audio_tokens, "cached_tokens": audio_tokens + 20},
        "seconds": billed,
    }
    assert emulator.calls[-1].duration == pytest.approx(seconds, abs=1e-4)


def test_usage_of_other_sample_rates_uses_the_resampled_length(
    emulator: Emulator, http: httpx.Client
) -> None:
    """An 8 kHz wav of 2 s counts as 2 s (the emulator decodes to 16 kHz like the model)."""
    wav8k = tones.encode(np.zeros(16000, dtype=np.int16), 8000)
    usage = post(http, emulator, body_for(wav8k)).json()["usage"]
    assert (usage["seconds"], usage["prompt_tokens_details"]["audio_tokens"]) == (2, 13)


@pytest.mark.parametrize("mime", ["audio/mpeg", "audio/mp3"])
def test_mp3_data_urls_are_accepted(
    emulator: Emulator, http: httpx.Client, mp3: bytes, mime: str
) -> None:
    """Both documented mp3 MIME types are transcribed."""
    r = post(http, emulator, body_for(mp3, mime))
    assert r.json()["choices"][0]["message"]["content"] == "alpha bravo charlie."


def test_mp3_without_id3_tag_is_sniffed_by_frame_sync(
    emulator: Emulator, http: httpx.Client, mp3: bytes
) -> None:
    """An mp3 that starts directly with an MPEG frame is still recognised as mp3."""
    assert mp3[:3] == b"ID3"
    size = (mp3[6] << 21) | (mp3[7] << 14) | (mp3[8] << 7) | mp3[9]
    bare = mp3[10 + size :]
    assert bare[0] == 0xFF
    assert post(http, emulator, body_for(bare, "audio/mpeg")).status_code == 200


@pytest.mark.parametrize(("fmt", "label"), [("wav", "wav"), ("mp3", "mp3")])
def test_pure_base64_with_format_is_accepted(
    emulator: Emulator, http: httpx.Client, wav: bytes, mp3: bytes, fmt: str, label: str
) -> None:
    """The newer form: bare base64 in ``data`` plus ``format``."""
    audio = wav if fmt == "wav" else mp3
    body = body_for(audio)
    body["messages"][0]["content"][0]["input_audio"] = {
        "data": base64.b64encode(audio).decode(),
        "format": label,
    }
    r = post(http, emulator, body)
    assert r.json()["choices"][0]["message"]["content"] == "alpha bravo charlie."
    assert emulator.calls[-1].body["messages"][0]["content"][0]["input_audio"] == {  # type: ignore[index]
        "data": f"<{len(base64.b64encode(audio))} base64 chars>",
        "format": label,
    }


def test_chunked_upload_is_read(emulator: Emulator, http: httpx.Client, wav: bytes) -> None:
    """A body sent with chunked transfer encoding (a streamed upload) is accepted."""
    payload = json.dumps(body_for(wav)).encode()
    parts = (payload[i : i + 4096] for i in range(0, len(payload), 4096))
    r = http.post(
        emulator.url + "/chat/completions",
        content=parts,
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_language_tag_options_and_record(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """``language`` may be omitted or zh/en; the record keeps the redacted body and language."""
    body = body_for(wav)
    del body["asr_options"]
    assert post(http, emulator, body).status_code == 200
    assert emulator.calls[-1].language == "auto"
    body["asr_options"] = {"language": "zh"}
    assert post(http, emulator, body).status_code == 200
    call = emulator.calls[-1]
    assert call.language == "zh" and call.mime == "audio/wav"
    data = call.body["messages"][0]["content"][0]["input_audio"]["data"]  # type: ignore[index]
    assert re.fullmatch(r"<\d+ base64 chars>", data)


# -- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize("comments", [False, True])
def test_sse_shape_and_order(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes, comments: bool
) -> None:
    """Role chunk, content pieces, finish chunk, usage chunk (choices []), then [DONE]."""
    emu = make_emulator(sse_comments=comments)
    r = post(http, emu, body_for(wav, stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert (": keep-alive" in r.text) is comments
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {(c["id"], c["created"], c["object"], c["model"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "chat.completion.chunk", "mimo-v2.5-asr")
    }
    role, *contents, finish, usage = chunks
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert role["choices"][0]["delta"]["content"] == ""
    assert role["choices"][0]["finish_reason"] is None
    pieces = [c["choices"][0]["delta"]["content"] for c in contents]
    assert pieces == ["alpha", " bravo", " charlie", "."]
    assert all(c["choices"][0]["delta"]["role"] is None for c in contents)
    assert finish["choices"][0]["delta"]["content"] is None
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 10 + 21  # 1.5 s
    assert emu.calls[-1].stream and emu.calls[-1].ok


# -- auth and routing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "style"),
    [
        ({"api-key": "sk-1"}, "api-key"),
        ({"Authorization": "Bearer sk-1"}, "bearer"),
        ({"api-key": "sk-1", "Authorization": "Bearer sk-1"}, "both"),
    ],
)
def test_both_auth_styles_are_accepted(
    emulator: Emulator, http: httpx.Client, wav: bytes, headers: dict[str, str], style: str
) -> None:
    """Either documented auth header works, and sending both is tolerated."""
    assert post(http, emulator, body_for(wav), headers).status_code == 200
    assert (emulator.calls[-1].auth_style, emulator.calls[-1].key_ok) == (style, True)


@pytest.mark.parametrize(
    "headers",
    [{}, {"api-key": ""}, {"Authorization": "Bearer"}, {"Authorization": "Basic sk-good"}],
)
def test_missing_key_is_the_documented_401(
    emulator: Emulator, http: httpx.Client, wav: bytes, headers: dict[str, str]
) -> None:
    """No usable key answers 401 with the exact published body."""
    r = post(http, emulator, body_for(wav), headers)
    assert (r.status_code, r.json()) == (401, ERROR_BODIES["401"])
    assert r.text.startswith('{"error":{"message":"Invalid API Key"')
    assert not emulator.calls[-1].key_ok and not emulator.calls[-1].ok


def test_configured_keys_refuse_others(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes
) -> None:
    """With ``api_keys`` set, only those keys pass."""
    emu = make_emulator(api_keys={"sk-good"})
    assert post(http, emu, body_for(wav), {"api-key": "sk-bad"}).status_code == 401
    assert post(http, emu, body_for(wav), {"Authorization": "Bearer sk-good"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v2/chat/completions"),
        ("GET", "/v1/chat/completions"),
    ],
)
def test_wrong_route_is_an_openresty_html_404(
    emulator: Emulator, http: httpx.Client, method: str, path: str
) -> None:
    """Any other route answers HTML, not JSON, and is still recorded."""
    r = http.request(method, emulator.root + path, headers=KEY, json={})
    assert r.status_code == 404 and r.headers["content-type"] == "text/html"
    assert "<center>openresty</center>" in r.text
    assert emulator.calls[-1].path == path and emulator.calls[-1].status == 404


def test_base_path_is_configurable(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes
) -> None:
    """``base_path`` moves the API route (and ``url``)."""
    emu = make_emulator(base_path="/api/v9/")
    assert emu.url.endswith("/api/v9")
    assert post(http, emu, body_for(wav)).status_code == 200


def test_unknown_model_is_a_json_404(emulator: Emulator, http: httpx.Client, wav: bytes) -> None:
    """A wrong model is a 404 in the JSON error envelope."""
    r = post(http, emulator, {**body_for(wav), "model": "mimo-v2-asr"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "404" and "mimo-v2-asr" in r.json()["error"]["param"]


# -- validation -------------------------------------------------------------------------------


def _audio_part(body: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = body["messages"][0]["content"][0]["input_audio"]
    return part


def _set_data(body: dict[str, Any], data: str, fmt: str | None = None) -> None:
    _audio_part(body)["data"] = data
    if fmt:
        _audio_part(body)["format"] = fmt


M4A = tones.to_bytes(["alpha"], "m4a")
WAV1 = tones.to_bytes(["alpha"], "wav")
B64 = base64.b64encode(WAV1).decode()
TEXT_PART = {"type": "text", "text": "transcribe"}

# (case id, mutation of a valid body, expected param substring)
BAD_REQUESTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("text part", lambda b: b["messages"][0]["content"].append(TEXT_PART), TEXT_PART_PARAM),
    ("text only", lambda b: b["messages"][0].update(content=[TEXT_PART]), TEXT_PART_PARAM),
    (
        "two parts",
        lambda b: b["messages"][0]["content"].append(b["messages"][0]["content"][0]),
        "exactly one input_audio part",
    ),
    (
        "two messages",
        lambda b: b["messages"].insert(0, {"role": "system", "content": "x"}),
        "exactly one user message",
    ),
    ("no messages", lambda b: b.update(messages=[]), "non-empty array"),
    ("assistant role", lambda b: b["messages"][0].update(role="assistant"), "role must be user"),
    ("string content", lambda b: b["messages"][0].update(content="hi"), "exactly one input_audio"),
    ("language", lambda b: b.update(asr_options={"language": "fr"}), "auto, zh, en"),
    ("asr option", lambda b: b["asr_options"].update(hotwords=["x"]), "asr_options.hotwords"),
    ("temperature", lambda b: b.update(temperature=0), "unknown field: temperature"),
    ("max_tokens", lambda b: b.update(max_tokens=10), "unknown field: max_tokens"),
    (
        "stream_options",
        lambda b: b.update(stream_options={"include_usage": True}),
        "unknown field: stream_options",
    ),
    ("stream type", lambda b: b.update(stream="yes"), "stream must be a boolean"),
    ("no model", lambda b: b.pop("model"), "model is required"),
    ("bare b64 no format", lambda b: _set_data(b, B64), "format is required"),
    ("bad format", lambda b: _set_data(b, B64, "ogg"), "format must be wav or mp3"),
    (
        "format contradicts url",
        lambda b: _audio_part(b).update(format="mp3"),
        "contradicts the data URL",
    ),
    ("ogg mime", lambda b: _set_data(b, "data:audio/ogg;base64," + B64), "unsupported audio MIME"),
    ("x-wav mime", lambda b: _set_data(b, "data:audio/x-wav;base64," + B64), "audio/x-wav"),
    ("not a data url", lambda b: _set_data(b, "data:audio/wav," + B64), "not a base64 data URL"),
    ("bad base64", lambda b: _set_data(b, "data:audio/wav;base64,@@@"), "not valid base64"),
    ("empty audio", lambda b: _set_data(b, "data:audio/wav;base64,"), "data is empty"),
    (
        "m4a labelled wav",
        lambda b: _set_data(b, "data:audio/wav;base64," + base64.b64encode(M4A).decode()),
        "only wav and mp3",
    ),
    (
        "wav labelled mp3",
        lambda b: _set_data(b, "data:audio/mpeg;base64," + B64),
        "audio content is wav but was declared as audio/mpeg",
    ),
    (
        "undecodable wav",
        lambda b: _set_data(
            b, "data:audio/wav;base64," + base64.b64encode(b"RIFF\0\0\0\0WAVEjunk" * 20).decode()
        ),
        "could not be decoded",
    ),
    ("extra part field", lambda b: _audio_part(b).update(url="x"), "input_audio has unknown"),
]


@pytest.mark.parametrize(
    ("mutate", "param"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_invalid_requests_get_param_incorrect(
    emulator: Emulator,
    http: httpx.Client,
    mutate: Callable[[dict[str, Any]], None],
    param: str,
) -> None:
    """Each contract violation is a 400 in the gateway's Param Incorrect envelope."""
    body = body_for(WAV1)
    mutate(body)
    r = post(http, emulator, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["message"], error["type"]) == ("400", "Param Incorrect", "")
    assert param in error["param"]
    assert emulator.calls[-1].status == 400 and not emulator.calls[-1].ok


def test_text_part_body_is_exactly_the_observed_one(emulator: Emulator, http: httpx.Client) -> None:
    """The text-part refusal is byte-for-byte the observed body."""
    body = body_for(WAV1)
    body["messages"][0]["content"].insert(0, TEXT_PART)
    r = post(http, emulator, body)
    assert r.text == (
        '{"error":{"code":"400","message":"Param Incorrect","param":"ASR request must not include '
        'text parts; text prompt is injected by the gateway","type":""}}'
    )


@pytest.mark.parametrize("field", ["response_format", "timestamp_granularities"])
def test_transcription_fields_give_500(emulator: Emulator, http: httpx.Client, field: str) -> None:
    """OpenAI transcription fields answer 500, as observed live."""
    r = post(http, emulator, {**body_for(WAV1), field: "json"})
    assert r.status_code == 500 and r.json() == ERROR_BODIES["500"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"[]", "application/json"), (b"{}", "text/plain")],
)
def test_bodies_that_are_not_json_objects_are_400(
    emulator: Emulator, http: httpx.Client, content: bytes, content_type: str
) -> None:
    """Broken JSON, a non-object or a non-JSON Content-Type is a 400."""
    r = http.post(
        emulator.url + "/chat/completions",
        content=content,
        headers={**KEY, "Content-Type": content_type},
    )
    assert r.status_code == 400 and r.json()["error"]["message"] == "Param Incorrect"


def test_base64_length_limit(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    """``data`` longer than ``max_b64_chars`` (prefix included) is a 400; at the limit it passes."""
    body = body_for(WAV1)
    limit = len(_audio_part(body)["data"])
    emu = make_emulator(max_b64_chars=limit)
    assert post(http, emu, body).status_code == 200
    emu_small = make_emulator(max_b64_chars=limit - 1)
    r = post(http, emu_small, body)
    assert r.status_code == 400 and f"exceeds {limit - 1}" in r.json()["error"]["param"]


def test_audio_longer_than_the_context_is_400(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes
) -> None:
    """Audio whose prompt tokens exceed ``max_prompt_tokens`` (default 6144, ~16 min) is a 400."""
    emu = make_emulator(max_prompt_tokens=30)  # the 1.5 s wav needs 10 + 21
    r = post(http, emu, body_for(wav))
    assert r.status_code == 400 and "31 prompt tokens exceed 30" in r.json()["error"]["param"]
    assert emu.limits.tokens_in_window == 0


def test_default_base64_limit_is_ten_million(emulator: Emulator) -> None:
    """The default limit is 10,000,000 characters."""
    assert emulator.config.max_b64_chars == 10_000_000


# -- limits -----------------------------------------------------------------------------------


def test_rpm_limit_answers_the_documented_429(
    make_emulator: MakeEmulator, http: httpx.Client
) -> None:
    """Beyond ``rpm`` requests in the window: 429 with the exact body; refused ones do not count."""
    emu = make_emulator(rpm=2)
    statuses = [post(http, emu, body_for(WAV1)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = post(http, emu, body_for(WAV1))
    assert r.text == '{"error":{"code":"429","message":"Too many requests","type":"limitation"}}'
    assert "retry-after" not in r.headers
    assert emu.calls[-1].error == "rate limited: RPM or concurrency cap"


def test_limit_windows_slide() -> None:
    """Requests and tokens leave the budget 60 s after they were admitted, not at a minute edge."""
    now = [0.0]
    limits = AccountLimits(rpm=2, tpm=100, clock=lambda: now[0])
    first = limits.enter()
    assert first and limits.charge(tokens(60), first)
    now[0] = 30.0
    second = limits.enter()
    assert second and not limits.enter()
    assert not limits.charge(tokens(41), second) and limits.charge(tokens(40), second)
    now[0] = 60.0  # the first request and its 60 tokens expire; the second stays
    assert limits.enter() and not limits.enter()
    assert limits.tokens_in_window == 40


def test_tokens_count_from_the_request_arrival() -> None:
    """Tokens charged after decoding are dated at the request's arrival, in any order, so the
    windows do not depend on how long the emulator took to decode."""
    now = [0.0]
    limits = AccountLimits(rpm=None, tpm=100, clock=lambda: now[0])
    early = limits.enter()
    now[0] = 10.0
    late = limits.enter()
    assert early and late
    now[0] = 11.0
    assert limits.charge(tokens(30), late)
    now[0] = 12.0
    assert limits.charge(tokens(50), early)  # decoded last, admitted first
    now[0] = 60.0
    assert limits.tokens_in_window == 30
    now[0] = 70.0
    assert limits.tokens_in_window == 0


def test_tpm_limit_counts_the_request_tokens(
    make_emulator: MakeEmulator, http: httpx.Client
) -> None:
    """Each 4 s of silence costs 47 tokens: two fit under TPM 100, the third is a 429."""
    emu = make_emulator(tpm=100, retry_after=7)
    four = body_for(tones.encode(silence(4.0), 16000))
    statuses = [post(http, emu, four) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["retry-after"] == "7"
    assert emu.calls[-1].error == "rate limited: TPM"
    assert emu.limits.tokens_in_window == 94


def test_limits_can_be_disabled(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    """rpm/tpm None lift the limits."""
    emu = make_emulator(rpm=None, tpm=None)
    assert {post(http, emu, body_for(WAV1)).status_code for _ in range(5)} == {200}
    assert emu.config.rpm is None and emu.config.tpm is None


def test_concurrency_cap(make_emulator: MakeEmulator, wav: bytes) -> None:
    """A request beyond ``max_concurrency`` in flight is refused with 429."""
    emu = make_emulator(max_concurrency=1)
    emu.add_fault(FaultRule("slow", delay=0.5))
    results: list[int] = []

    def slow_request() -> None:
        with httpx.Client(timeout=10) as c:
            results.append(post(c, emu, body_for(wav)).status_code)

    worker = threading.Thread(target=slow_request)
    worker.start()
    wait_for(lambda: bool(emu.calls) and emu.calls[0].fault == "slow", 5, "the slow request")
    with httpx.Client(timeout=10) as c:
        assert post(c, emu, body_for(wav)).status_code == 429
    worker.join()
    assert results == [200]


def test_latency_model(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    """Answers take (0.3 s + 0.03 s per audio second) x latency_scale."""
    emu = make_emulator(latency_scale=0.5)
    assert emu.latency(10.0) == pytest.approx(0.3)
    started = time.monotonic()
    post(http, emu, body_for(tones.encode(silence(10.0), 16000)))
    assert 0.3 <= time.monotonic() - started < 2.0


# -- faults -----------------------------------------------------------------------------------

STATUS_CASES = {
    "400": (
        400,
        {
            "error": {
                "code": "400",
                "message": "Param Incorrect",
                "param": "injected fault",
                "type": "",
            }
        },
    ),
    "401": (401, ERROR_BODIES["401"]),
    "402": (402, ERROR_BODIES["402"]),
    "402-unwrapped": (
        402,
        {"type": "server_error", "message": "Upstream request failed: Insufficient account funds"},
    ),
    "403": (403, {"error": {"code": "403", "message": "Illegal access", "type": "illegal_access"}}),
    "421": (421, ERROR_BODIES["421"]),
    "429": (429, ERROR_BODIES["429"]),
    "500": (500, ERROR_BODIES["500"]),
    "503": (503, ERROR_BODIES["503"]),
}


@pytest.mark.parametrize("kind", sorted(STATUS_CASES))
def test_status_faults_answer_their_body_once(
    emulator: Emulator, http: httpx.Client, wav: bytes, kind: str
) -> None:
    """A status fault answers its status and body for ``times`` requests, then normal service."""
    emulator.add_fault(FaultRule(kind))
    r = post(http, emulator, body_for(wav))
    assert (r.status_code, r.json()) == STATUS_CASES[kind]
    call = emulator.calls[-1]
    assert (call.fault, call.ok, call.words) == (kind, False, WORDS)
    assert post(http, emulator, body_for(wav)).status_code == 200


def test_html_404_and_empty_500_faults(emulator: Emulator, http: httpx.Client, wav: bytes) -> None:
    """404-html answers openresty HTML; 500-empty answers no body at all."""
    emulator.add_fault(FaultRule("404-html"))
    emulator.add_fault(FaultRule("500-empty"))
    r = post(http, emulator, body_for(wav))
    assert r.status_code == 404 and r.headers["content-type"] == "text/html"
    r = post(http, emulator, body_for(wav))
    assert (r.status_code, r.content) == (500, b"")


def test_slow_fault_delays_a_normal_answer(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """slow waits ``delay`` seconds, then answers normally."""
    emulator.add_fault(FaultRule("slow", delay=0.3))
    started = time.monotonic()
    r = post(http, emulator, body_for(wav))
    assert time.monotonic() - started >= 0.3 and r.status_code == 200
    assert emulator.calls[-1].ok and emulator.calls[-1].fault == "slow"


def test_hang_ends_when_the_client_gives_up(emulator: Emulator, wav: bytes) -> None:
    """hang never answers; the client's read timeout fires and the emulator lets go."""
    emulator.add_fault(FaultRule("hang"))
    with httpx.Client(timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        post(c, emulator, body_for(wav))
    assert emulator.calls[-1].status is None and emulator.calls[-1].fault == "hang"
    wait_for(lambda: not any(t.name == "mimo-emulator-conn" for t in threading.enumerate()), 5,
             "the connection thread to end")


def test_answer_to_a_client_that_gave_up_is_not_ok(make_emulator: MakeEmulator, wav: bytes) -> None:
    """A client that timed out during the latency never counts as a successful call."""
    emu = make_emulator()
    emu.add_fault(FaultRule("slow", delay=0.5))
    with httpx.Client(timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        post(c, emu, body_for(wav))
    wait_for(lambda: emu.calls[-1].error is not None, 5, "the call to be recorded as failed")
    assert emu.calls[-1].error == "client gone before the answer"
    assert emu.successful_calls() == []


def test_stop_is_prompt_while_a_request_hangs(make_emulator: MakeEmulator, wav: bytes) -> None:
    """stop() breaks a hung request and returns quickly; the client sees a dropped connection."""
    emu = make_emulator()
    emu.add_fault(FaultRule("hang"))
    errors: list[BaseException] = []

    def hung() -> None:
        with httpx.Client(timeout=30) as c:
            try:
                post(c, emu, body_for(wav))
            except httpx.HTTPError as exc:
                errors.append(exc)

    worker = threading.Thread(target=hung)
    worker.start()
    wait_for(lambda: bool(emu.calls) and emu.calls[0].fault == "hang", 5, "the hung request")
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 1.5
    worker.join(5)
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError)


def test_stop_closes_idle_keep_alive_connections(make_emulator: MakeEmulator, wav: bytes) -> None:
    """A client that keeps its connection open does not keep the emulator from stopping."""
    emu = make_emulator()
    url = emu.url + "/chat/completions"
    with httpx.Client(timeout=10) as c:
        assert c.post(url, json=body_for(wav), headers=KEY).status_code == 200
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(httpx.TransportError):
            c.post(url, json=body_for(wav), headers=KEY)


def test_drop_headers_closes_without_a_response(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """drop-headers closes the connection before any status line."""
    emulator.add_fault(FaultRule("drop-headers"))
    with pytest.raises(httpx.RemoteProtocolError):
        post(http, emulator, body_for(wav))
    assert emulator.calls[-1].status is None and not emulator.calls[-1].ok
    assert post(http, emulator, body_for(wav)).status_code == 200


@pytest.mark.parametrize("kind", ["drop-body", "drop-stream"])
def test_drop_body_cuts_a_non_streaming_answer(
    emulator: Emulator, http: httpx.Client, wav: bytes, kind: str
) -> None:
    """drop-body (and drop-stream on a plain request) sends 200 and half the body, then closes."""
    emulator.add_fault(FaultRule(kind))
    with pytest.raises(httpx.RemoteProtocolError):
        post(http, emulator, body_for(wav))
    call = emulator.calls[-1]
    assert (call.status, call.ok) == (200, False)
    assert post(http, emulator, body_for(wav)).status_code == 200


def test_drop_stream_cuts_the_event_stream(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """drop-stream sends the first events of a stream, then drops the connection."""
    emulator.add_fault(FaultRule("drop-stream"))
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream(
            "POST", emulator.url + "/chat/completions", json=body_for(wav, stream=True), headers=KEY
        ) as r,
    ):
        assert r.status_code == 200
        received.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert 1 <= len(received) <= 2 and "data: [DONE]" not in received
    assert not emulator.calls[-1].ok


def test_no_done_ends_the_stream_cleanly_without_done(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """no-done ends the chunked stream properly, with the usage chunk but no [DONE]."""
    emulator.add_fault(FaultRule("no-done"))
    r = post(http, emulator, body_for(wav, stream=True))
    data = sse_data(r.text)
    assert "[DONE]" not in data and json.loads(data[-1])["choices"] == []
    assert emulator.calls[-1].fault == "no-done" and not emulator.calls[-1].ok


@pytest.mark.parametrize("stream", [False, True])
def test_length_fault_truncates(
    emulator: Emulator, http: httpx.Client, wav: bytes, stream: bool
) -> None:
    """length: finish_reason "length" and a cut transcript without the final full stop."""
    emulator.add_fault(FaultRule("length"))
    r = post(http, emulator, body_for(wav, stream=stream))
    if stream:
        chunks = [json.loads(d) for d in sse_data(r.text)[:-1]]
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        finish = chunks[-2]["choices"][0]["finish_reason"]
    else:
        choice = r.json()["choices"][0]
        text, finish = choice["message"]["content"], choice["finish_reason"]
    assert (text, finish) == ("alpha", "length")
    assert not emulator.calls[-1].ok


def test_output_cap_gives_length_naturally(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes
) -> None:
    """An answer longer than ``max_output_tokens`` is cut there with finish_reason "length".

    Completion tokens follow the audio (5 per second): the 1.5 s wav needs 8, so a cap of 6
    keeps 6/8 of its three words.
    """
    emu = make_emulator(max_output_tokens=6)
    data = post(http, emu, body_for(wav)).json()
    choice = data["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("alpha bravo", "length")
    assert data["usage"]["completion_tokens"] == 6


def test_content_filter_is_inside_a_200(emulator: Emulator, http: httpx.Client, wav: bytes) -> None:
    """content_filter: HTTP 200, empty content, finish_reason content_filter."""
    emulator.add_fault(FaultRule("content_filter"))
    r = post(http, emulator, body_for(wav))
    choice = r.json()["choices"][0]
    assert (r.status_code, choice["message"]["content"], choice["finish_reason"]) == (
        200,
        "",
        "content_filter",
    )


@pytest.mark.parametrize(("language", "tag"), [("en", "english"), ("zh", "chinese")])
def test_tags_fault_wraps_the_text(
    emulator: Emulator, http: httpx.Client, wav: bytes, language: str, tag: str
) -> None:
    """tags: a <think> block first, then the text in a language tag."""
    emulator.add_fault(FaultRule("tags"))
    body = body_for(wav)
    body["asr_options"]["language"] = language
    content = post(http, emulator, body).json()["choices"][0]["message"]["content"]
    assert re.fullmatch(rf"<think>.+</think>\s*<{tag}>alpha bravo charlie\.</{tag}>", content, re.S)
    assert emulator.calls[-1].ok


def test_empty_fault_is_a_successful_empty_answer(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """empty: HTTP 200, stop, content ""."""
    emulator.add_fault(FaultRule("empty"))
    choice = post(http, emulator, body_for(wav, stream=False)).json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("", "stop")


def test_when_word_and_times_select_requests(emulator: Emulator, http: httpx.Client) -> None:
    """A rule with ``when_word`` only hits audio containing that word, ``times`` times."""
    emulator.add_fault(FaultRule("500", times=2, when_word="zulu"))
    plain = body_for(tones.to_bytes(["alpha"]))
    marked = body_for(tones.to_bytes(["alpha", "zulu"]))
    statuses = [post(http, emulator, b).status_code for b in (plain, marked, plain, marked, marked)]
    assert statuses == [200, 500, 200, 500, 200]
    assert emulator.faults.pending() == []


def test_every_fault_kind_is_known() -> None:
    """The injectable kinds are exactly those of the faults table; unknown kinds are refused."""
    assert set(FAULT_KINDS) == {
        *STATUS_CASES, "404-html", "500-empty", "200-401", "200-402", "200-429", "200-500",
        "slow", "hang", "drop-headers", "drop-body", "drop-stream", "no-done", "length",
        "content_filter", "tags", "empty", "looping", "repetition_truncation", "no-usage",
        "no-seconds", "float-seconds",
    }  # fmt: skip
    table = (faults.__doc__ or "").split("=====\n", 2)[1]
    rows = {line.split()[0] for line in table.splitlines() if line[:1].strip()}
    documented = {kind for row in rows for kind in FAULT_KINDS if kind == row}
    ranges = {"400 .. 503": set(STATUS_CASES), "200-401 .. 200-500": {"200-401", "200-402",
                                                                       "200-429", "200-500"}}
    for prefix, kinds in ranges.items():
        assert prefix in table
        documented |= kinds
    assert documented == set(FAULT_KINDS)
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRule("teapot")


def test_seeded_fault_mix_is_reproducible(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    """The random fault mix gives the same sequence for the same seed."""

    def statuses(seed: int) -> list[int]:
        emu = make_emulator(fault_rate={"500": 0.3, "429": 0.2}, seed=seed, rpm=None, tpm=None)
        return [post(http, emu, body_for(WAV1)).status_code for _ in range(16)]

    first = statuses(7)
    assert first == statuses(7)
    assert {200, 500, 429} <= set(first)


# -- bookkeeping and control ------------------------------------------------------------------


def test_success_counts_per_audio(emulator: Emulator, http: httpx.Client, wav: bytes) -> None:
    """successful_calls() skips faulted ones; success_counts() groups them by audio sha256."""
    emulator.add_fault(FaultRule("503"))
    for _ in range(3):
        post(http, emulator, body_for(wav))
    post(http, emulator, body_for(WAV1))
    import hashlib

    counts = emulator.success_counts()
    assert counts == {hashlib.sha256(wav).hexdigest(): 2, hashlib.sha256(WAV1).hexdigest(): 1}
    assert len(emulator.successful_calls()) == 3 and len(emulator.calls) == 4


def test_control_endpoints(emulator: Emulator, http: httpx.Client, wav: bytes) -> None:
    """health, faults (POST/GET), calls and reset work over HTTP without a key."""
    root = emulator.root + "/_emulator"
    assert http.get(root + "/health").json()["status"] == "ok"
    rules = [{"kind": "421", "times": 1}, {"kind": "tags", "when_word": "charlie"}]
    assert http.post(root + "/faults", json=rules).json() == {"queued": 2}
    assert [r["kind"] for r in http.get(root + "/faults").json()] == ["421", "tags"]
    assert post(http, emulator, body_for(wav)).status_code == 421
    assert "<think>" in post(http, emulator, body_for(wav)).text
    calls = http.get(root + "/calls").json()
    assert [(c["status"], c["fault"]) for c in calls] == [(421, "421"), (200, "tags")]
    assert calls[0]["body"]["model"] == "mimo-v2.5-asr" and calls[0]["words"] == WORDS
    assert http.post(root + "/faults", json=[{"kind": "nope"}]).status_code == 400
    assert http.post(root + "/faults", json={"kind": "500", "extra": 1}).status_code == 400
    assert http.post(root + "/reset").json() == {"ok": True}
    assert http.get(root + "/calls").json() == [] and emulator.faults.pending() == []
    assert http.get(root + "/nothing").status_code == 404


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    """``python -m mimo_watchd.emulator`` prints its URL, serves, and exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimo_watchd.emulator", "--port", "0", "--latency-scale", "0",
         "--fault", "503:2", "--api-key", "sk-cli"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        with httpx.Client(timeout=10) as c:
            body = body_for(WAV1)
            codes = [
                c.post(url + "/chat/completions", json=body, headers={"api-key": "sk-cli"})
                for _ in range(3)
            ]
            assert [r.status_code for r in codes] == [503, 503, 200]
            assert c.get(url.removesuffix("/v1") + "/_emulator/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_cli_rejects_bad_faults() -> None:
    """Unknown fault kinds are refused by the argument parser."""
    import argparse

    from mimo_watchd.emulator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--fault", "hang:*", "--fault-rate", "500=0.1", "--rpm", "0"])
    config = cli.config_from_args(args)
    assert config.faults == (FaultRule("hang", None),) and config.rpm is None
    assert dict(config.fault_rate) == {"500": 0.1}
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault", "teapot"])


# -- the tone vocabulary ----------------------------------------------------------------------


def test_vocabulary_is_distinct_and_in_the_telephone_band() -> None:
    """About 40 distinct words on distinct frequencies between 300 Hz and 3.4 kHz."""
    freqs = sorted(tones.FREQUENCIES.values())
    assert len(tones.WORDS) == len(set(tones.WORDS)) == len(set(freqs)) >= 40
    assert freqs[0] >= 300 and freqs[-1] < 3400
    assert min(b - a for a, b in itertools.pairwise(freqs)) >= 60


CODECS = ["wav", "mp3", "m4a", "ogg", "opus", "flac", "amr", "webm", "aiff"]
SENTENCE = ["zulu", "alpha", "mike", "scarlet", "nine", "echo", "ivory", "bravo"]


@pytest.mark.parametrize("gapless", [False, True], ids=["gaps", "gapless"])
@pytest.mark.parametrize("fmt", CODECS)
def test_recognition_survives_every_codec(tmp_path: Path, fmt: str, gapless: bool) -> None:
    """Words written with tones.write in any format come back in order after decoding."""
    path = tones.write(tmp_path / f"s.{fmt}", SENTENCE, fmt, gapless=gapless)
    assert tones.recognize(tones.read(path)) == SENTENCE


def test_whole_vocabulary_through_amr() -> None:
    """Every word survives the narrowest codec (AMR-NB, 8 kHz, 12.2 kbit/s), back to back."""
    words = list(tones.WORDS)
    assert tones.recognize(tones.read(tones.to_bytes(words, "amr", gapless=True))) == words


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_fragments_at_a_cut(fmt: str) -> None:
    """A sliver (< 0.12 s) of a word at a cut is ignored; half a word or more is reported."""
    samples = tones.synthesize(["alpha", "mike", "bravo"])
    mike_start = round((0.1 + 0.5) * 16000)
    for seconds, expected in [(0.06, ["alpha"]), (0.09, ["alpha"]), (0.15, ["alpha", "mike"])]:
        cut = mike_start + round(seconds * 16000)
        left = tones.read(tones.encode(samples[:cut], 16000, fmt))
        assert tones.recognize(left) == expected, seconds
        right = tones.read(
            tones.encode(samples[mike_start + round((0.3 - seconds) * 16000) :], 16000, fmt)
        )
        assert tones.recognize(right) == [*expected[1:], "bravo"], seconds


def test_non_tonal_audio_is_recognised_as_nothing() -> None:
    """Silence, white noise and a chord give no words (documented choice)."""
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(16000) * 8000).astype(np.int16)
    t = np.arange(16000) / 16000
    chord = (np.sin(2 * np.pi * np.outer((400, 1050, 2000), t)).sum(axis=0) * 6000).astype(np.int16)
    assert tones.recognize(silence(1.0)) == []
    assert tones.recognize(noise) == []
    assert tones.recognize(chord) == []


def test_synthesize_layout_and_checks() -> None:
    """Length = lead + words + gaps + tail; unknown words and gapless repeats are refused."""
    assert len(tones.synthesize(["alpha", "bravo"])) == round(1.0 * 16000)
    assert len(tones.synthesize(["alpha", "bravo"], gapless=True)) == round(0.8 * 16000)
    assert tones.duration(["alpha"], word_seconds=0.5, lead_seconds=0) == 0.5
    assert tones.recognize(tones.synthesize(["echo", "echo"])) == ["echo", "echo"]
    with pytest.raises(ValueError, match="vocabulary"):
        tones.synthesize(["hello"])
    with pytest.raises(ValueError, match="differ"):
        tones.synthesize(["echo", "echo"], gapless=True)


def test_recognizer_is_incremental(tmp_path: Path) -> None:
    """Feeding arbitrary block sizes gives the same words as one call."""
    samples = tones.synthesize(SENTENCE, gapless=True)
    rec = tones.Recognizer()
    for start in range(0, len(samples), 777):
        rec.feed(samples[start : start + 777])
    assert rec.finish() == SENTENCE == tones.recognize(samples)


def test_write_samples_streams_an_iterable_of_blocks(tmp_path: Path) -> None:
    """A long file can be encoded from a generator of blocks (a minute of silence, then a word)."""

    def blocks() -> Iterator[np.ndarray]:
        for _ in range(60):
            yield silence(1.0)
        yield tones.synthesize(["golf"])

    path = tmp_path / "long.mp3"
    tones.write_samples(path, blocks(), 16000, "mp3")
    decoded = tones.read(path)
    assert abs(len(decoded) / 16000 - 60.5) < 0.1
    assert tones.recognize(decoded) == ["golf"]
