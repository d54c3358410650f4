"""The emulator as real as the published record (issue 13 items 5-8, issue 14 item 7): billing,
realistic usage, non-tone audio, exact bodies, the new faults, the verbose log, no import cycle."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.harness import wait_for
from mimo_watchd.emulator import Emulator, EmulatorConfig, FaultRule, cli, tones
from mimo_watchd.emulator.content import LONG_AUDIO_LOSS, LOOP_REPEATS, SILENCE_LOOP
from mimo_watchd.emulator.faults import ERROR_BODIES, TEXT_PART_PARAM
from tests.test_emulator import (
    KEY,
    WAV1,
    WORDS,
    MakeEmulator,
    body_for,
    no_leaked_emulator_threads,
    post,
    silence,
    sse_data,
)

__all__ = ["no_leaked_emulator_threads"]  # the autouse fixture applies here too

EIGHT = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]  # 4.0 s
PACKAGE = Path(__file__).resolve().parents[1] / "mimo_watchd" / "emulator"


@pytest.fixture(scope="module")
def wav() -> bytes:
    """A wav of the three WORDS (1.5 s)."""
    return tones.to_bytes(WORDS, "wav")


@pytest.fixture(scope="module")
def four_seconds() -> bytes:
    """A wav of exactly 4.0 s of tone words, the length of Xiaomi's example."""
    audio = tones.to_bytes(EIGHT, "wav")
    assert tones.duration(EIGHT) == 4.0
    return audio


@pytest.fixture
def http() -> Any:
    """A plain httpx client."""
    with httpx.Client(timeout=10) as client:
        yield client


def noise(seconds: float, level: float, seed: int = 5) -> bytes:
    """A wav of white noise at ``level`` of full scale (RMS): no tone word in it."""
    rng = np.random.default_rng(seed)
    samples = np.clip(rng.standard_normal(round(seconds * 16000)) * level * 32767, -32767, 32767)
    return tones.encode(samples.astype(np.int16), 16000)


def content_of(response: httpx.Response) -> str:
    """The transcript of a non-streaming answer."""
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


# -- item 5: billing when the model ran -------------------------------------------------------


def test_answer_to_a_client_gone_is_billed_not_delivered(
    make_emulator: MakeEmulator, wav: bytes
) -> None:
    """A transcript computed after the client timed out is billed, never delivered (``ok``)."""
    emu = make_emulator()
    emu.add_fault(FaultRule("slow", delay=0.5))
    with httpx.Client(timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        post(c, emu, body_for(wav))
    wait_for(lambda: emu.calls[-1].error is not None, 5, "the late answer to be recorded")
    call = emu.calls[-1]
    assert (call.billed, call.ok, call.error) == (True, False, "client gone before the answer")
    assert emu.billed_counts() == {hashlib.sha256(wav).hexdigest(): 1}
    assert emu.success_counts() == {}


@pytest.mark.parametrize(
    ("kind", "stream"),
    [("drop-body", False), ("drop-stream", True), ("drop-headers", False), ("no-done", True)],
)
def test_answers_lost_after_the_model_ran_are_billed(
    emulator: Emulator, http: httpx.Client, wav: bytes, kind: str, stream: bool
) -> None:
    """A dropped body, a cut stream, a drop before the headers and a stream without [DONE]
    are billed but not delivered; their tokens stay in the TPM window."""
    emulator.add_fault(FaultRule(kind))
    with contextlib.suppress(httpx.HTTPError):  # the broken connection is the point
        post(http, emulator, body_for(wav, stream=stream))
    call = emulator.calls[-1]
    assert (call.fault, call.billed, call.ok) == (kind, True, False)
    assert emulator.limits.tokens_in_window == 10 + 21 + 8  # 1.5 s: 8 completion tokens


@pytest.mark.parametrize("kind", ["500", "503", "421", "402-unwrapped", "500-empty", "200-500"])
def test_error_answers_are_not_billed_and_give_their_tokens_back(
    emulator: Emulator, http: httpx.Client, wav: bytes, kind: str
) -> None:
    """An error answer (a status fault or an error inside a 200) is neither billed nor charged
    to the TPM window; it still counts as a request."""
    emulator.add_fault(FaultRule(kind))
    post(http, emulator, body_for(wav))
    call = emulator.calls[-1]
    assert (call.fault, call.billed, call.ok) == (kind, False, False)
    assert emulator.limits.tokens_in_window == 0
    assert emulator.limits.requests_in_window == 1


@pytest.mark.parametrize("kind", ["429", "200-429"])
def test_a_429_leaves_no_trace_in_the_windows(
    emulator: Emulator, http: httpx.Client, wav: bytes, kind: str
) -> None:
    """A request answered 429 (in the status line or inside a 200) counts for nothing."""
    emulator.add_fault(FaultRule(kind))
    post(http, emulator, body_for(wav))
    assert (emulator.limits.requests_in_window, emulator.limits.tokens_in_window) == (0, 0)
    assert not emulator.calls[-1].billed


def test_tpm_refusal_leaves_no_trace_in_the_rpm_window(
    make_emulator: MakeEmulator, http: httpx.Client, four_seconds: bytes
) -> None:
    """A request refused for TPM is not counted against RPM either."""
    emu = make_emulator(tpm=100)  # one 4 s request costs 66
    statuses = [post(http, emu, body_for(four_seconds)).status_code for _ in range(2)]
    assert statuses == [200, 429]
    assert (emu.limits.requests_in_window, emu.limits.tokens_in_window) == (1, 66)


def test_hang_and_refusals_are_not_billed(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """A request refused by validation, and one that hangs until the client leaves, cost
    nothing."""
    post(http, emulator, {**body_for(wav), "temperature": 0})
    emulator.add_fault(FaultRule("hang"))
    with httpx.Client(timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        post(c, emulator, body_for(wav))
    wait_for(lambda: emulator.calls[-1].error is not None, 5, "the hang to end")
    assert [(c.status, c.billed) for c in emulator.calls] == [(400, False), (None, False)]


def test_billed_and_delivered_over_the_control_routes(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """``/_emulator/calls`` carries both flags per call and ``/health`` both counts."""
    emulator.add_fault(FaultRule("drop-body"))
    with pytest.raises(httpx.HTTPError):
        post(http, emulator, body_for(wav))
    post(http, emulator, body_for(wav))
    calls = http.get(emulator.root + "/_emulator/calls").json()
    assert [(c["billed"], c["ok"]) for c in calls] == [(True, False), (True, True)]
    health = http.get(emulator.root + "/_emulator/health").json()
    assert (health["calls"], health["billed"], health["delivered"]) == (2, 2, 1)
    assert len(emulator.billed_calls()) == 2 and len(emulator.successful_calls()) == 1


# -- item 6: realistic usage ------------------------------------------------------------------


def test_usage_of_dense_speech_is_xiaomis_example(
    emulator: Emulator, http: httpx.Client, four_seconds: bytes
) -> None:
    """4 s of speech costs 46 prompt + 20 completion = 66 tokens, as in the published answer."""
    usage = post(http, emulator, body_for(four_seconds)).json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        46, 20, 66)
    assert usage["seconds"] == 4


def test_completion_rate_is_an_option(
    make_emulator: MakeEmulator, http: httpx.Client, four_seconds: bytes
) -> None:
    """``completion_tokens_per_second`` sets the completion cost; the words stay the same."""
    emu = make_emulator(completion_tokens_per_second=2.5)
    r = post(http, emu, body_for(four_seconds))
    assert r.json()["usage"]["completion_tokens"] == 10
    assert content_of(r) == " ".join(EIGHT) + "."


@pytest.mark.parametrize(("counts", "charged"), [("total", 66), ("prompt", 46)])
def test_tpm_window_counts_total_or_prompt_tokens(
    make_emulator: MakeEmulator, http: httpx.Client, four_seconds: bytes, counts: str,
    charged: int,
) -> None:
    """``tpm_counts`` decides what the TPM window charges: 3 x 46 fits 140, 3 x 66 does not."""
    emu = make_emulator(tpm=140, tpm_counts=counts)
    statuses = [post(http, emu, body_for(four_seconds)).status_code for _ in range(3)]
    fits = 140 // charged
    assert statuses == [200] * fits + [429] * (3 - fits)
    assert emu.limits.tokens_in_window == fits * charged
    with pytest.raises(ValueError, match="tpm_counts"):
        EmulatorConfig(tpm_counts="audio")


# -- item 7: audio that is not the tone vocabulary --------------------------------------------


def test_other_audio_gets_a_placeholder_that_says_what_was_heard(
    emulator: Emulator, http: httpx.Client
) -> None:
    """Loud audio without tone words (a user's own recording) is answered with a deterministic
    placeholder naming the emulator and the audio's length, at the realistic token cost."""
    first = post(http, emulator, body_for(noise(3.0, 0.1)))
    again = post(http, emulator, body_for(noise(3.0, 0.1, seed=6)))
    text = content_of(first)
    assert "mimo-watchd emulator" in text and "3.0 seconds" in text
    assert content_of(again) == text
    assert first.json()["usage"]["completion_tokens"] == 15
    assert emulator.calls[-1].words == [] and emulator.calls[-1].ok


@pytest.mark.parametrize("audio", ["digital silence", "faint noise", "a word's sliver"])
def test_silence_and_sub_gate_audio_answer_empty_content(
    emulator: Emulator, http: httpx.Client, audio: str
) -> None:
    """Silence, noise under the energy gate and a sliver of a tone answer "" (the live service
    is believed to answer silence with empty content)."""
    samples = {
        "digital silence": silence(3.0),
        "faint noise": tones.read(noise(3.0, 0.005)),
        "a word's sliver": np.concatenate([tones.synthesize(["mike"], word_seconds=0.08),
                                           silence(2.0)]),
    }[audio]
    r = post(http, emulator, body_for(tones.encode(samples, 16000)))
    assert (content_of(r), r.json()["usage"]["completion_tokens"]) == ("", 1)


def test_words_past_the_quality_window_are_lost(
    make_emulator: MakeEmulator, http: httpx.Client
) -> None:
    """Past ``quality_window_seconds`` of audio in one request, exactly floor(22.9 %) of the
    words are lost, spread over the request; within it, and with the window off, none."""
    words = [tones.WORDS[i % 40] for i in range(24)]  # 12.0 s
    long = body_for(tones.to_bytes(words))
    short = body_for(tones.to_bytes(words[:18]))  # 9.0 s
    emu = make_emulator(quality_window_seconds=10.0)
    kept = content_of(post(http, emu, long)).rstrip(".").split()
    assert len(kept) == 24 - int(24 * LONG_AUDIO_LOSS) == 19
    assert kept == [w for w in words if w in kept] and kept[:4] == words[:4]
    assert emu.calls[-1].words == words  # the record keeps what was heard
    assert content_of(post(http, emu, short)).rstrip(".").split() == words[:18]
    assert content_of(post(http, make_emulator(), long)).rstrip(".").split() == words


def test_command_line_turns_the_quality_window_on() -> None:
    """The CLI emulator loses words past 120 s by default; 0 turns it off; in-process, off."""
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.config_from_args(parser.parse_args([])).quality_window_seconds == 120.0
    off = parser.parse_args(["--quality-window-seconds", "0"])
    assert cli.config_from_args(off).quality_window_seconds is None
    assert EmulatorConfig().quality_window_seconds is None


# -- item 8: the published record -------------------------------------------------------------


def test_text_part_with_response_format_is_the_observed_400(
    emulator: Emulator, http: httpx.Client
) -> None:
    """A text part plus ``response_format`` gets the text-part 400 the live probe saw."""
    body = body_for(WAV1, response_format="json")
    body["messages"][0]["content"].append({"type": "text", "text": "transcribe"})
    r = post(http, emulator, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == TEXT_PART_PARAM


@pytest.mark.parametrize(
    ("either", "expected"), [(False, 401), (True, 200)], ids=["strict", "accept-either"]
)
def test_wrong_api_key_with_right_bearer(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes, either: bool, expected: int
) -> None:
    """Both headers with different keys: strict by default (every key must be valid), either
    valid key with ``accept_either_key``; the same right key in both is always fine."""
    emu = make_emulator(api_keys={"sk-good"}, accept_either_key=either)
    mixed = {"api-key": "sk-bad", "Authorization": "Bearer sk-good"}
    assert post(http, emu, body_for(wav), mixed).status_code == expected
    same = {"api-key": "sk-good", "Authorization": "Bearer sk-good"}
    assert post(http, emu, body_for(wav), same).status_code == 200


DELTA_KEYS = {"content", "role", "tool_calls", "audio", "audio_tokens", "reasoning_content"}


def test_sse_chunks_have_exactly_the_published_keys(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """Deltas carry the published keys; ``usage: null`` only on the finish chunk."""
    chunks = [json.loads(d) for d in sse_data(post(http, emulator, body_for(wav, stream=True))
                                              .text)[:-1]]
    *deltas, finish, usage = chunks
    top = {"id", "object", "created", "model", "choices"}
    for chunk in deltas:
        assert set(chunk) == top
        assert set(chunk["choices"][0]) == {"index", "delta", "finish_reason"}
        assert set(chunk["choices"][0]["delta"]) == DELTA_KEYS
    assert set(finish) == top | {"usage"} and finish["usage"] is None
    assert set(finish["choices"][0]["delta"]) == DELTA_KEYS
    assert set(usage) == top | {"usage"} and usage["choices"] == []


def test_verbose_logs_one_line_per_request_without_the_key(
    make_emulator: MakeEmulator, http: httpx.Client, wav: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """``verbose``: each request is one log line saying what came in and what went out."""
    emu = make_emulator(verbose=True)
    secret = "sk-verbose-secret-0123"
    with caplog.at_level(logging.INFO, logger="mimo_watchd.emulator"):
        post(http, emu, body_for(wav), {"api-key": secret})
        post(http, emu, body_for(wav), {})
    lines = [r.getMessage() for r in caplog.records if r.name == "mimo_watchd.emulator"]
    assert len(lines) == 2
    assert "auth=api-key audio/wav 1.50s" in lines[0] and "status=200" in lines[0]
    assert "tokens=31+8 billed=true delivered=true" in lines[0]
    assert "status=401" in lines[1] and "billed=false" in lines[1]
    assert all(secret not in line for line in lines)


def test_cli_verbose_goes_to_stderr_without_the_key() -> None:
    """``python -m mimo_watchd.emulator --verbose`` logs each request on stderr, never the key."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimo_watchd.emulator", "--port", "0", "--latency-scale", "0",
         "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with httpx.Client(timeout=10) as c:
            r = c.post(url + "/chat/completions", json=body_for(WAV1), headers=KEY)
            assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = [line for line in err.splitlines() if "emulator:" in line]
    assert len(lines) == 1 and "POST /v1/chat/completions" in lines[0]
    assert KEY["api-key"] not in err


# -- new faults for the client's fidelity tests -----------------------------------------------


def test_no_done_stream_is_otherwise_complete(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """no-done sends every chunk, the finish and the usage chunk included, only not [DONE]."""
    emulator.add_fault(FaultRule("no-done"))
    chunks = [json.loads(d) for d in sse_data(post(http, emulator, body_for(wav, stream=True))
                                              .text)]
    finish, usage = chunks[-2:]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["seconds"] == 2
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text == "alpha bravo charlie."


def test_no_done_leaves_a_plain_answer_alone(
    emulator: Emulator, http: httpx.Client, wav: bytes
) -> None:
    """no-done has no effect on a plain request: its answer is delivered and billed."""
    emulator.add_fault(FaultRule("no-done"))
    assert content_of(post(http, emulator, body_for(wav))) == "alpha bravo charlie."
    call = emulator.calls[-1]
    assert (call.fault, call.ok, call.billed) == ("no-done", True, True)


@pytest.mark.parametrize("code", ["401", "402", "429", "500"])
@pytest.mark.parametrize("stream", [False, True])
def test_error_inside_a_200(
    emulator: Emulator, http: httpx.Client, wav: bytes, code: str, stream: bool
) -> None:
    """200-CODE answers HTTP 200 with that status's error body (a stream: as its only event)."""
    emulator.add_fault(FaultRule(f"200-{code}"))
    r = post(http, emulator, body_for(wav, stream=stream))
    assert r.status_code == 200
    if stream:
        assert r.headers["content-type"] == "text/event-stream"
        assert [json.loads(d) for d in sse_data(r.text)] == [ERROR_BODIES[code]]
    else:
        assert r.json() == ERROR_BODIES[code]
    assert not emulator.calls[-1].ok and not emulator.calls[-1].billed


@pytest.mark.parametrize(("kind", "finish"),
                         [("looping", "stop"), ("repetition_truncation", "repetition_truncation")])
@pytest.mark.parametrize("stream", [False, True])
def test_looping_output(
    emulator: Emulator, http: httpx.Client, four_seconds: bytes, kind: str, finish: str,
    stream: bool,
) -> None:
    """looping repeats the first words dozens of times; repetition_truncation says so."""
    emulator.add_fault(FaultRule(kind))
    r = post(http, emulator, body_for(four_seconds, stream=stream))
    if stream:
        chunks = [json.loads(d) for d in sse_data(r.text)[:-1]]
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        got_finish = chunks[-2]["choices"][0]["finish_reason"]
    else:
        text, got_finish = content_of(r), r.json()["choices"][0]["finish_reason"]
    phrase = "alpha bravo charlie delta."
    assert text == " ".join([phrase] * LOOP_REPEATS) and LOOP_REPEATS >= 24
    assert got_finish == finish and emulator.calls[-1].billed


def test_looping_on_silence_repeats_a_stock_phrase(
    emulator: Emulator, http: httpx.Client
) -> None:
    """With nothing to transcribe, a looping model repeats a stock phrase."""
    emulator.add_fault(FaultRule("looping"))
    text = content_of(post(http, emulator, body_for(tones.encode(silence(2.0), 16000))))
    assert text == " ".join([SILENCE_LOOP] * LOOP_REPEATS)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["no-usage", "no-seconds", "float-seconds"])
def test_odd_usage(
    emulator: Emulator, http: httpx.Client, kind: str, stream: bool
) -> None:
    """no-usage leaves usage out (a stream: no usage chunk); no-seconds drops ``seconds``;
    float-seconds sends it as a float (4.6 for 4.6 s of audio)."""
    audio = tones.to_bytes(EIGHT, word_seconds=0.375)  # 4.6 s
    emulator.add_fault(FaultRule(kind))
    r = post(http, emulator, body_for(audio, stream=stream))
    if stream:
        chunks = [json.loads(d) for d in sse_data(r.text)[:-1]]
        usages = [c["usage"] for c in chunks if c["choices"] == []]
        assert len(usages) == (kind != "no-usage")
        usage = usages[0] if usages else None
    else:
        usage = r.json().get("usage")
    if kind == "no-usage":
        assert usage is None and emulator.calls[-1].usage is None
    elif kind == "no-seconds":
        assert usage is not None and "seconds" not in usage and usage["prompt_tokens"] == 50
    else:
        assert usage is not None and usage["seconds"] == 4.6 and isinstance(usage["seconds"], float)
    assert emulator.calls[-1].ok and emulator.calls[-1].billed


# -- issue 10 item 4: no import cycle in the emulator -----------------------------------------


def _imports(path: Path) -> set[str]:
    """Every emulator module ``path`` imports, at any level (TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        prefix = "mimo_watchd.emulator."
        found |= {n[len(prefix):].split(".")[0] for n in names if n.startswith(prefix)}
    return found & {p.stem for p in PACKAGE.glob("*.py")}


def test_emulator_package_has_no_import_cycle() -> None:
    """No module of the emulator imports, directly or not, one that imports it back."""
    graph = {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert cycles == [], f"modules in an import cycle: {cycles}"
    assert {"server", "control", "transcribe"} <= set(graph)

