"""The API client against the emulator over real loopback HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings
from mimo_watchd.emulator import Emulator, FaultRule, tones
from mimo_watchd.errors import (
    AudioError,
    OperatorError,
    PermanentApiError,
    TransientApiError,
)

WORDS = ["alpha", "bravo", "charlie"]


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("audio") / "three.wav"
    tones.write(path, WORDS, "wav")
    return path.read_bytes()


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("audio") / "three.mp3"
    tones.write(path, WORDS, "mp3")
    return path.read_bytes()


def make_client(emulator: Emulator, **api: Any) -> MimoClient:
    api.setdefault("backoff_initial_seconds", 0.01)
    api.setdefault("backoff_max_seconds", 0.05)
    api.setdefault("max_retries", 3)
    settings = default_api_settings(base_url=emulator.url, **api)
    return MimoClient(settings, Secret("sk-test-key-123"))


@pytest.fixture
def client(emulator: Emulator) -> Any:
    c = make_client(emulator)
    yield c
    c.close()


def expected_text(words: list[str]) -> str:
    return " ".join(words) + "."


@pytest.mark.parametrize("style", ["api-key", "bearer"])
def test_both_auth_styles_and_exact_body(emulator: Emulator, wav: bytes, style: str) -> None:
    """Each auth style is sent alone, and the body has exactly the documented fields."""
    c = make_client(emulator, auth_header=style)
    try:
        t = c.transcribe(wav, "audio/wav", 1.6, language="en")
    finally:
        c.close()
    assert t.text == expected_text(WORDS)
    call = emulator.calls[-1]
    assert call.auth_style == style and call.key_ok
    body = call.body
    assert set(body) == {"model", "messages", "asr_options", "stream"}
    assert body["model"] == "mimo-v2.5-asr" and body["stream"] is False
    assert body["asr_options"] == {"language": "en"}
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    (part,) = msg["content"]
    assert part["type"] == "input_audio" and set(part["input_audio"]) == {"data"}


def test_usage_request_id_and_mp3(client: MimoClient, mp3: bytes, emulator: Emulator) -> None:
    """An mp3 goes as audio/mpeg; usage and the 32-hex request id come back."""
    t = client.transcribe(mp3, "audio/mpeg", 1.6)
    assert t.text == expected_text(WORDS)
    assert t.usage["seconds"] >= 1 and t.usage["prompt_tokens"] == \
        t.usage["prompt_tokens_details"]["audio_tokens"] + 21
    assert t.request_id and len(t.request_id) == 32
    assert t.attempts == 1 and emulator.calls[-1].status == 200


def test_streaming_assembles_content_and_usage(emulator: Emulator, wav: bytes) -> None:
    """With stream: true the deltas are joined and usage comes from the final chunk."""
    c = make_client(emulator, stream=True)
    try:
        t = c.transcribe(wav, "audio/wav", 1.6)
    finally:
        c.close()
    assert t.text == expected_text(WORDS)
    assert t.usage["seconds"] >= 1 and t.raw.get("streamed") is True
    assert emulator.calls[-1].stream is True


def test_journal_hook_sees_paid_response_first(client: MimoClient, wav: bytes,
                                               emulator: Emulator) -> None:
    """on_response gets the raw body of a 200 before it is returned, also a 'length' one (its
    re-split is the caller's decision)."""
    seen: list[dict[str, Any]] = []
    emulator.add_fault(FaultRule("length"))
    t = client.transcribe(wav, "audio/wav", 1.6, on_response=seen.append)
    assert len(seen) == 1 and seen[0]["choices"][0]["finish_reason"] == "length"
    assert t.truncated and t.raw == seen[0]


@pytest.mark.parametrize(("kind", "error"), [
    ("400", PermanentApiError),
    ("401", OperatorError),
    ("402", OperatorError),
    ("402-unwrapped", OperatorError),
    ("403", OperatorError),
    ("421", PermanentApiError),
])
def test_error_classes(client: MimoClient, wav: bytes, emulator: Emulator, kind: str,
                       error: type[Exception]) -> None:
    """Each documented error status maps to its class, without retries for permanent ones."""
    emulator.add_fault(FaultRule(kind, times=5))
    before = len(emulator.calls)
    with pytest.raises(error) as info:
        client.transcribe(wav, "audio/wav", 1.6)
    assert len(emulator.calls) == before + 1
    assert info.value.status == int(kind[:3])
    assert "sk-test-key-123" not in str(info.value.to_dict())


def test_html_404_is_an_operator_problem(emulator: Emulator, wav: bytes) -> None:
    """A wrong base URL answers HTML 404; that is a configuration problem, not a crash."""
    settings = default_api_settings(base_url=emulator.url.replace("/v1", "/v2"))
    c = MimoClient(settings, Secret("sk-test-key-123"))
    try:
        with pytest.raises(OperatorError) as info:
            c.transcribe(wav, "audio/wav", 1.6)
    finally:
        c.close()
    assert info.value.status == 404 and "base_url" in str(info.value)


@pytest.mark.parametrize("kind", ["429", "500", "500-empty", "503", "drop-headers", "drop-body"])
def test_transient_then_success(client: MimoClient, wav: bytes, emulator: Emulator,
                                kind: str) -> None:
    """Two transient failures are retried and the third attempt succeeds."""
    emulator.add_fault(FaultRule(kind, times=2))
    t = client.transcribe(wav, "audio/wav", 1.6)
    assert t.text == expected_text(WORDS) and t.attempts == 3


def test_retries_exhausted(emulator: Emulator, wav: bytes) -> None:
    """After max_retries the last transient error is raised with the attempt count."""
    c = make_client(emulator, max_retries=2)
    emulator.add_fault(FaultRule("503", times=10))
    try:
        with pytest.raises(TransientApiError) as info:
            c.transcribe(wav, "audio/wav", 1.6)
    finally:
        c.close()
    assert info.value.attempts == 3 and info.value.status == 503


def test_timeout_is_transient(emulator: Emulator, wav: bytes) -> None:
    """A response slower than the read timeout is a transient error, not a hang."""
    c = make_client(emulator, timeout_base_seconds=0.3, timeout_per_audio_second=0.0,
                    max_retries=0)
    emulator.add_fault(FaultRule("slow", delay=3.0))
    started = time.monotonic()
    try:
        with pytest.raises(TransientApiError, match="timed out"):
            c.transcribe(wav, "audio/wav", 1.6)
    finally:
        c.close()
    assert time.monotonic() - started < 2.5


def test_stream_cut_before_its_finish_chunk_is_transient(emulator: Emulator,
                                                        wav: bytes) -> None:
    """A stream dropped before its finish chunk is retried."""
    c = make_client(emulator, stream=True)
    emulator.add_fault(FaultRule("drop-stream"))
    try:
        t = c.transcribe(wav, "audio/wav", 1.6)
    finally:
        c.close()
    assert t.attempts == 2 and t.text == expected_text(WORDS)


def test_a_whole_stream_without_done_is_the_answer(emulator: Emulator, wav: bytes) -> None:
    """A stream with its finish and usage chunks but no [DONE] is used, not paid again
    (issue 13 item 1)."""
    c = make_client(emulator, stream=True)
    emulator.add_fault(FaultRule("no-done"))
    seen: list[dict[str, Any]] = []
    try:
        t = c.transcribe(wav, "audio/wav", 1.6, on_response=seen.append)
    finally:
        c.close()
    assert t.attempts == 1 and t.text == expected_text(WORDS) and t.usage["seconds"] == 2
    assert len(emulator.calls) == 1 and seen == [t.raw] and t.raw["stream_done"] is False


def test_content_filter_in_200_is_permanent(client: MimoClient, wav: bytes,
                                            emulator: Emulator) -> None:
    """finish_reason content_filter inside HTTP 200 is handled like a 421."""
    emulator.add_fault(FaultRule("content_filter"))
    with pytest.raises(PermanentApiError, match="moderation"):
        client.transcribe(wav, "audio/wav", 1.6)


def test_tags_are_stripped(client: MimoClient, wav: bytes, emulator: Emulator) -> None:
    """<think>…</think> and <chinese>/<english> tags never reach the transcript."""
    emulator.add_fault(FaultRule("tags"))
    t = client.transcribe(wav, "audio/wav", 1.6)
    assert t.text == expected_text(WORDS)


def test_empty_content_is_no_speech(client: MimoClient, wav: bytes, emulator: Emulator) -> None:
    """Empty content is a successful 'no speech' result, not an error."""
    emulator.add_fault(FaultRule("empty"))
    t = client.transcribe(wav, "audio/wav", 1.6)
    assert t.text == "" and t.no_speech


def test_size_limit_refused_before_sending(emulator: Emulator, wav: bytes) -> None:
    """Audio whose base64 exceeds the limit is refused locally, nothing is sent or paid."""
    c = make_client(emulator, max_request_b64_chars=50_000)
    before = len(emulator.calls)
    try:
        with pytest.raises(AudioError, match="too large"):
            c.transcribe(wav, "audio/wav", 1.6)
    finally:
        c.close()
    assert len(emulator.calls) == before


