"""The client's pacing against the real emulator over loopback, on windows of a few seconds:
realistic usage at the token ceiling without a 429, under both counting rules; a 429 holds
everyone only until the window frees; what an error did not cost is given back at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from bench.harness import wait_for
from mimo_watchd import claimguard
from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings
from mimo_watchd.emulator import Emulator, FaultRule, tones
from mimo_watchd.errors import LeaseLostError, TransientApiError
from mimo_watchd.ratelimit import WINDOW_MARGIN, RateLimiter

EIGHT = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]  # 4.0 s


@pytest.fixture(scope="module")
def four_seconds() -> bytes:
    """4.0 s of tone words: 46 prompt + 20 completion tokens, as in Xiaomi's example."""
    return tones.to_bytes(EIGHT, "wav")


@pytest.fixture
def clients() -> Iterator[Callable[..., MimoClient]]:
    """A factory of clients whose limiter uses the emulator's short window; all closed after."""
    made: list[MimoClient] = []

    def make(emu: Emulator, *, rpm: int = 1000, tpm: int = 100_000, **api: Any) -> MimoClient:
        api = {"max_concurrency": 4, "backoff_initial_seconds": 0.01,
               "backoff_max_seconds": 0.05, **api}
        settings = default_api_settings(base_url=emu.url, **api)
        limiter = RateLimiter(rpm, tpm, counts=settings.tpm_counts,
                              max_in_flight=settings.max_concurrency,
                              window_seconds=emu.config.window_seconds + WINDOW_MARGIN)
        client = MimoClient(settings, Secret("sk-pacing-test"), limiter=limiter)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.mark.parametrize(("counts", "per_window"), [("total", 3), ("prompt", 4)])
def test_token_ceiling_without_a_429(
    make_emulator: Callable[..., Emulator], clients: Callable[..., MimoClient],
    four_seconds: bytes, counts: str, per_window: int,
) -> None:
    """At a 200-token ceiling, 4 s requests (66 total, 46 prompt) go out as many per window as
    the account's rule allows - 3 or 4 - and none is refused."""
    emu = make_emulator(rpm=None, tpm=200, tpm_counts=counts, window_seconds=2.0)
    client = clients(emu, tpm=200, tpm_counts=counts)
    n = 2 * per_window + 1
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: client.transcribe(four_seconds, "audio/wav", 4.0),
                                range(n)))
    assert [c.status for c in emu.calls] == [200] * n
    assert all(r.attempts == 1 for r in results)
    times = sorted(c.time for c in emu.calls)
    assert times[per_window - 1] - times[0] < 1.0  # a window's worth went out together
    assert times[per_window] - times[0] >= 2.0  # and the next waited for the window


def test_a_429_holds_everyone_until_the_window_frees(
    make_emulator: Callable[..., Emulator], clients: Callable[..., MimoClient],
    four_seconds: bytes,
) -> None:
    """After a 429 at a full window, the retry and every other request wait until the oldest
    request leaves the window (~3 s here), not a fixed back-off (5-10 s here)."""
    emu = make_emulator(rpm=2, tpm=None, window_seconds=3.0)
    client = clients(emu, rpm=2, backoff_initial_seconds=10.0, backoff_max_seconds=10.0)
    client.transcribe(four_seconds, "audio/wav", 4.0)
    emu.add_fault(FaultRule("429"))
    retried = threading.Thread(target=client.transcribe, args=(four_seconds, "audio/wav", 4.0))
    retried.start()
    try:
        wait_for(lambda: any(c.status == 429 for c in emu.calls) or not retried.is_alive(), 10,
                 "the 429")
        client.transcribe(four_seconds, "audio/wav", 4.0)  # a caller that never saw the 429
    finally:
        retried.join(20)
    first, refused, *later = emu.calls
    assert (first.status, refused.status, [c.status for c in later]) == (200, 429, [200, 200])
    for call in later:
        assert first.time + 3.0 <= call.time <= first.time + 4.5


def test_an_error_gives_its_tokens_back_at_once(
    make_emulator: Callable[..., Emulator], clients: Callable[..., MimoClient],
    four_seconds: bytes,
) -> None:
    """A 503 costs nothing, so its retry fits the token budget at once instead of waiting for
    the window to slide."""
    emu = make_emulator(rpm=None, tpm=140, window_seconds=5.0)
    client = clients(emu, tpm=140)
    client.transcribe(four_seconds, "audio/wav", 4.0)
    emu.add_fault(FaultRule("503"))
    client.transcribe(four_seconds, "audio/wav", 4.0)
    _, failed, retry = emu.calls
    assert (failed.status, retry.status) == (503, 200)
    assert retry.time - failed.time < 1.0


def test_a_lost_answer_keeps_its_reservation(
    make_emulator: Callable[..., Emulator], clients: Callable[..., MimoClient],
    four_seconds: bytes,
) -> None:
    """An answer lost to a timeout was billed, so its tokens stay reserved: the next request
    waits for the window instead of earning a 429."""
    emu = make_emulator(rpm=None, tpm=140, window_seconds=3.0)
    client = clients(emu, tpm=140, max_retries=0, timeout_base_seconds=0.3,
                     timeout_per_audio_second=0.0)
    emu.add_fault(FaultRule("slow", delay=1.0))
    with pytest.raises(TransientApiError, match="timed out"):
        client.transcribe(four_seconds, "audio/wav", 4.0)
    client.transcribe(four_seconds, "audio/wav", 4.0)
    client.transcribe(four_seconds, "audio/wav", 4.0)
    lost, second, third = emu.calls
    assert lost.billed and not lost.ok
    assert [c.status for c in (second, third)] == [200, 200]
    assert third.time - lost.time >= 3.0


def test_the_accounts_cap_on_requests_in_flight_is_learned(
    make_emulator: Callable[..., Emulator], clients: Callable[..., MimoClient],
    four_seconds: bytes,
) -> None:
    """Against an account that takes 2 requests at a time, a client allowed 6 is refused for
    the first burst only, then keeps to 2 in flight; every request is answered."""
    emu = make_emulator(rpm=None, tpm=None, max_concurrency=2, latency_scale=1.0,
                        latency_base=0.4)
    client = clients(emu, max_concurrency=6)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: client.transcribe(four_seconds, "audio/wav", 4.0), range(10)))
    statuses = [c.status for c in sorted(emu.calls, key=lambda c: c.time)]
    assert statuses.count(200) == 10 and statuses.count(429) <= 4
    last_refused = max(i for i, status in enumerate(statuses) if status == 429)
    assert len(statuses) - last_refused - 1 >= 6  # the burst's retries and the rest: no 429
    assert client.limiter._capacity == 2


def test_a_request_whose_claim_was_lost_before_sending_leaves_the_windows(
        four_seconds: bytes) -> None:
    """A fleet job whose claim turns out lost after its request was let through the limiter
    sends nothing, so that request and its tokens leave the windows at once: the next request
    of a one-request window goes without waiting a minute."""
    sent: list[httpx.Request] = []
    settings = default_api_settings(base_url="http://127.0.0.1:9/v1", max_retries=0)
    limiter = RateLimiter(1, 100_000, max_in_flight=4)
    client = MimoClient(settings, Secret("sk-pacing-test"), limiter=limiter,
                        transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(
                            500)))

    def lost(_seconds: float) -> None:
        raise LeaseLostError("the claim expired")

    try:
        with claimguard.bound(lost), pytest.raises(LeaseLostError):
            client.transcribe(four_seconds, "audio/wav", 4.0)
        assert sent == []
        with limiter._cond:
            assert limiter._wait_needed(limiter._estimate(4.0), limiter._clock()) == 0
            assert limiter._in_flight == 0
    finally:
        client.close()
