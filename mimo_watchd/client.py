"""The stateful MiMo API client: HTTP, deadlines, retries, and the limiter's bookkeeping.

What a request and an answer look like, and what an answer means, is ``protocol``'s (pure
functions). httpx exceptions are translated into ``mimo_watchd.errors`` here and nowhere
else. Every paid (HTTP 200) answer is handed to ``on_response`` the moment it is complete,
before it is interpreted, so the caller can journal it and never pay for the same audio twice.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from mimo_watchd import __version__, claimguard
from mimo_watchd.config import ApiSettings, Secret, effective_base_url
from mimo_watchd.errors import ApiError, RateLimitedError, TransientApiError
from mimo_watchd.httperrors import translated
from mimo_watchd.protocol import (
    Transcript,
    assemble_sse,
    classify,
    error_in_body,
    parse_completion,
    parse_json_answer,
    request_body,
    retry_after_seconds,
)
from mimo_watchd.ratelimit import RateLimiter, Reservation
from mimo_watchd.runclock import RUN_CLOCK

log = structlog.get_logger("mimo_watchd.client")

MAX_ERROR_BODY = 64 * 1024

ResponseHook = Callable[[dict[str, Any]], None]


class MimoClient:
    """Sends audio to ``{base_url}/chat/completions``; thread-safe, shared by every worker."""

    def __init__(
        self,
        api: ApiSettings,
        key: Secret,
        *,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        base_url: str | None = None,
        sleep_jitter: Callable[[], float] = random.random,
    ) -> None:
        self.api = api
        self._key = key
        self.url = (base_url or effective_base_url(api)) + "/chat/completions"
        # Where the API is, for messages: the URL's host and port, never its user or password.
        self.host = urlsplit(self.url).netloc.rpartition("@")[2]
        # The limiter owns every pacing decision: the windows and the requests in flight.
        self.limiter = limiter or RateLimiter(api.requests_per_minute, api.tokens_per_minute,
                                              counts=api.tpm_counts,
                                              max_in_flight=api.max_concurrency)
        self._stop = threading.Event()
        self._jitter = sleep_jitter
        self._http = httpx.Client(transport=transport, follow_redirects=False,
                                  headers={"User-Agent": f"mimo-watchd/{__version__}"},
                                  limits=httpx.Limits(max_connections=api.max_concurrency + 2))
        # Called after every HTTP attempt with (status, usage of a paid answer, is a retry):
        # the daemon's metrics hang here.
        self.on_attempt: Callable[[str, dict[str, Any] | None, bool], None] | None = None

    def __repr__(self) -> str:
        return f"MimoClient(url={self.url!r}, model={self.api.model!r})"

    def close(self) -> None:
        """Stops retries and waits; closes connections."""
        self._stop.set()
        self.limiter.close()
        self._http.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _headers(self) -> dict[str, str]:
        key = self._key.reveal()
        auth = {"Authorization": f"Bearer {key}"} if self.api.auth_header == "bearer" \
            else {"api-key": key}
        return {**auth, "Content-Type": "application/json"}

    def _timeout(self, duration: float, size: int) -> tuple[httpx.Timeout, float]:
        """Per-operation timeouts plus a hard deadline for the whole exchange."""
        rw = self.api.timeout_base_seconds + self.api.timeout_per_audio_second * duration
        # Uploads of ~10 MB behind slow links: allow ~100 kB/s on top of the base.
        write = rw + size / 100_000
        return (httpx.Timeout(connect=self.api.connect_timeout_seconds, read=rw, write=write,
                              pool=None), self.api.connect_timeout_seconds + write + rw)

    def transcribe(
        self,
        data: bytes,
        mime: str,
        duration: float,
        *,
        language: str | None = None,
        on_response: ResponseHook | None = None,
    ) -> Transcript:
        """One transcript for one request's worth of audio, retrying transient failures."""
        body = request_body(data, mime, model=self.api.model,
                            language=language or self.api.language, stream=self.api.stream,
                            max_b64_chars=self.api.max_request_b64_chars)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                raw = self._once(body, duration, on_response)
                transcript = parse_completion(raw, attempts=attempt,
                                              api_seconds=time.monotonic() - started)
            except ApiError as exc:
                exc.attempts = attempt
                if self.on_attempt:
                    self.on_attempt(str(exc.status or "error"), None, attempt > 1)
                if not exc.retryable or attempt > self.api.max_retries or self.stopping:
                    raise
                # After a 429 the limiter holds every request (this retry included) until the
                # window has room again: no fixed back-off on top of it.
                delay = 0.0 if isinstance(exc, RateLimitedError) else self._backoff(attempt, exc)
                log.warning("api.retry", attempt=attempt, delay_seconds=round(delay, 2),
                            reason=exc.reason, http_status=exc.status)
                if self._stop.wait(delay):
                    raise
                continue
            if self.on_attempt:
                self.on_attempt("200", transcript.usage, attempt > 1)
            return transcript

    def _backoff(self, attempt: int, exc: ApiError) -> float:
        retry_after = exc.retry_after if isinstance(exc, TransientApiError) else None
        if retry_after is not None:
            return min(retry_after, 600.0)
        cap = self.api.backoff_max_seconds
        base = min(cap, self.api.backoff_initial_seconds * 2 ** (attempt - 1))
        return float(base * (0.5 + 0.5 * self._jitter()))

    def _once(self, body: bytes, duration: float, on_response: ResponseHook | None
              ) -> dict[str, Any]:
        timeout, budget = self._timeout(duration, len(body))
        reservation = self.limiter.acquire(duration, self._stop)
        if reservation is None:
            raise TransientApiError("client is shutting down")
        try:
            try:
                claimguard.before_send(budget)  # a fleet's job: still ours for the whole request
            except BaseException:
                self.limiter.withdraw(reservation)  # nothing was sent: nothing to count
                raise
            # The deadline is judged in time the process could run (``runclock``): stopped past
            # it while the answer arrived, it still reads that answer (paid) when it runs again.
            with RUN_CLOCK:
                raw = self._exchange(body, timeout, RUN_CLOCK.now() + budget, reservation)
            usage = raw.get("usage")
            self.limiter.settle(reservation, usage if isinstance(usage, dict) else None)
        finally:
            self.limiter.release(reservation)
        if on_response is not None:
            on_response(raw)
        return raw

    def _exchange(self, body: bytes, timeout: httpx.Timeout, deadline: float,
                  reservation: Reservation) -> dict[str, Any]:
        """One HTTP exchange: the answer's JSON (a stream assembled), or the error it is."""
        try:
            with self._http.stream("POST", self.url, content=body, headers=self._headers(),
                                   timeout=timeout) as resp:
                if resp.status_code != 200:
                    text = _read_limited(resp, deadline)
                    raise classify(resp.status_code, text,
                                   retry_after=retry_after_seconds(
                                       resp.headers.get("retry-after"), time.time()),
                                   location=resp.headers.get("location"),
                                   secrets=[self._key.reveal()])
                ctype = resp.headers.get("content-type", "")
                if self.api.stream or "text/event-stream" in ctype:
                    return assemble_sse(_lines(resp, deadline))
                raw = parse_json_answer(_read_limited(resp, deadline, limit=None))
                # s.7: an error body inside a 200 is that status's error (classified by its
                # code): never journaled as a paid answer, and a 429 holds every request.
                error = error_in_body(raw)
                if error is not None:
                    raise error
                return raw
        except ApiError as exc:
            # An error status (or error event) was not charged; an answer that arrived
            # broken (status 200) was: its model ran, so its reservation stays.
            if exc.status is not None and exc.status != 200:
                self._uncharged(reservation, exc)
            raise
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise translated(exc, self.host) from exc

    def _uncharged(self, reservation: Reservation, exc: ApiError) -> None:
        """Give back what an error answer did not cost; a 429 holds every request."""
        if isinstance(exc, RateLimitedError):
            self.limiter.rejected(reservation, exc.retry_after)
        else:
            self.limiter.refund(reservation)


def _check_deadline(deadline: float) -> None:
    if RUN_CLOCK.now() > deadline:
        raise TransientApiError("timed out (response took longer than its deadline)")


def _read_limited(resp: httpx.Response, deadline: float, limit: int | None = MAX_ERROR_BODY
                  ) -> str:
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        _check_deadline(deadline)
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size >= limit:
            break
    return b"".join(chunks).decode("utf-8", errors="replace")


def _lines(resp: httpx.Response, deadline: float) -> Iterator[str]:
    for line in resp.iter_lines():
        _check_deadline(deadline)
        yield line
