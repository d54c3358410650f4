"""The MiMo ASR HTTP client: one request shape, both response shapes, one error mapping.

httpx exceptions are translated into ``mimo_watchd.errors`` here and nowhere else. Every paid
(HTTP 200) response is handed to ``on_response`` the moment it is complete, before it is
interpreted, so the caller can journal it and never pay for the same audio twice.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from mimo_watchd import __version__, claimguard
from mimo_watchd.config import ApiSettings, Secret, effective_base_url
from mimo_watchd.errors import (
    ApiError,
    ApiUnreachableError,
    AudioError,
    OperatorError,
    OutputTruncatedError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)
from mimo_watchd.ratelimit import RateLimiter, estimate_tokens

log = structlog.get_logger("mimo_watchd.client")

MIME_BY_FORMAT = {"wav": "audio/wav", "mp3": "audio/mpeg"}
MAX_ERROR_BODY = 64 * 1024
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LANG_TAG = re.compile(r"</?\s*(?:chinese|english)\s*>", re.IGNORECASE)
_FUNDS = re.compile(r"insufficient|balance|funds|arrear", re.IGNORECASE)

ResponseHook = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Transcript:
    """What one successful request produced."""

    text: str
    finish_reason: str
    request_id: str | None
    usage: dict[str, Any]
    attempts: int
    api_seconds: float
    raw: dict[str, Any] = field(repr=False)

    @property
    def no_speech(self) -> bool:
        return self.text == ""


def clean_text(content: str | None) -> str:
    """The transcript without model tags: ``<think>…</think>`` and ``<chinese>``/``<english>``."""
    if not content:
        return ""
    text = _THINK.sub("", content)
    text = _LANG_TAG.sub("", text)
    return text.strip()


def parse_completion(raw: dict[str, Any], *, attempts: int = 1, api_seconds: float = 0.0
                     ) -> Transcript:
    """Interprets a (journaled) chat.completion body; raises for length/content_filter/garbage."""
    try:
        choice = raw["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason") or "stop"
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TransientApiError(f"malformed response: {_excerpt(raw)}", status=200) from exc
    request_id = raw.get("id")
    usage = raw.get("usage") if isinstance(raw.get("usage"), dict) else {}
    text = clean_text(content if isinstance(content, str) else None)
    if finish == "content_filter":
        raise PermanentApiError("moderation block: the API filtered this audio "
                                "(finish_reason content_filter)", status=200,
                                body={"finish_reason": finish}, request_id=request_id)
    if finish == "length":
        raise OutputTruncatedError("transcript hit the output limit (finish_reason length)",
                                   partial_text=text, status=200, request_id=request_id)
    return Transcript(text=text, finish_reason=finish, request_id=request_id, usage=usage or {},
                      attempts=attempts, api_seconds=api_seconds, raw=raw)


def _excerpt(value: Any, limit: int = 300) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)[:limit]
    return s[:limit]


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify(status: int, body_text: str, headers: httpx.Headers) -> ApiError:
    """Maps a non-200 answer to the error hierarchy; the body may be JSON, HTML or empty."""
    try:
        body: Any = json.loads(body_text) if body_text else None
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = " - ".join(str(x) for x in (err.get("message"), err.get("param")) if x)
    elif isinstance(body, dict) and "message" in body:
        message = str(body["message"])  # the unwrapped shape seen with 402
    else:
        message = _excerpt(body_text.strip(), 120) if body_text.strip() else "(empty body)"
    kept = body if body is not None else (_excerpt(body_text, 500) or None)
    what = f"HTTP {status}: {message}"
    kw: dict[str, Any] = {"status": status, "body": kept}
    if status in (401, 403):
        hint = "invalid API key or key for another host" if status == 401 else \
            "access refused (region or key restriction)"
        return OperatorError(f"{what} ({hint})", **kw)
    if status == 402 or _FUNDS.search(message):
        return OperatorError(f"{what} (insufficient balance: top up the account)", **kw)
    if status == 404:
        return OperatorError(f"{what} (wrong api.base_url or api.model?)", **kw)
    if status == 421:
        return PermanentApiError(f"{what} (moderation block)", **kw)
    if status == 429:
        return RateLimitedError(what, retry_after=_retry_after(headers), **kw)
    if status in (408, 425) or status >= 500:
        return TransientApiError(what, retry_after=_retry_after(headers), **kw)
    return PermanentApiError(what, **kw)


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
        self.limiter = limiter or RateLimiter(api.requests_per_minute, api.tokens_per_minute)
        self._slots = threading.BoundedSemaphore(api.max_concurrency)
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

    def _body(self, data: bytes, mime: str, language: str) -> bytes:
        b64 = base64.b64encode(data).decode("ascii")
        if len(b64) > self.api.max_request_b64_chars:
            raise AudioError(f"audio too large for one request: {len(b64):,} base64 characters "
                             f"(limit {self.api.max_request_b64_chars:,})")
        body = {
            "model": self.api.model,
            "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": f"data:{mime};base64,{b64}"}}]}],
            "asr_options": {"language": language},
            "stream": self.api.stream,
        }
        return json.dumps(body, separators=(",", ":")).encode("ascii")

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
        body = self._body(data, mime, language or self.api.language)
        tokens = estimate_tokens(duration)
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                raw = self._once(body, duration, tokens, on_response)
                transcript = parse_completion(raw, attempts=attempt,
                                              api_seconds=time.monotonic() - started)
            except ApiError as exc:
                exc.attempts = attempt
                if self.on_attempt:
                    self.on_attempt(str(exc.status or "error"), None, attempt > 1)
                if not exc.retryable or attempt > self.api.max_retries or self.stopping:
                    raise
                delay = self._backoff(attempt, exc)
                log.warning("api.retry", attempt=attempt, delay_seconds=round(delay, 2),
                            reason=exc.reason, http_status=exc.status)
                if isinstance(exc, RateLimitedError):
                    self.limiter.penalize(delay)
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

    def _once(self, body: bytes, duration: float, tokens: int,
              on_response: ResponseHook | None) -> dict[str, Any]:
        timeout, budget = self._timeout(duration, len(body))
        with self._slots:
            reservation = self.limiter.acquire(tokens, self._stop)
            if reservation is None:
                raise TransientApiError("client is shutting down")
            claimguard.before_send(budget)  # a fleet's job: still ours for the whole request
            deadline = time.monotonic() + budget
            try:
                with self._http.stream("POST", self.url, content=body, headers=self._headers(),
                                       timeout=timeout) as resp:
                    if resp.status_code != 200:
                        text = _read_limited(resp, deadline)
                        raise classify(resp.status_code, text, resp.headers)
                    ctype = resp.headers.get("content-type", "")
                    if self.api.stream or "text/event-stream" in ctype:
                        raw = assemble_sse(_lines(resp, deadline))
                    else:
                        raw = _parse_json(_read_limited(resp, deadline, limit=None))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
                # No connection at all: an outage (DNS, refused, proxy down), not this request's.
                raise ApiUnreachableError(urlsplit(self.url).netloc,
                                          f"{type(exc).__name__}: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise TransientApiError(f"timed out ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientApiError(f"connection failed: {type(exc).__name__}: {exc}") \
                    from exc
        usage = raw.get("usage")
        reservation.settle(usage.get("total_tokens") if isinstance(usage, dict) else None)
        if on_response is not None:
            on_response(raw)
        return raw


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
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


def _parse_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TransientApiError(f"HTTP 200 with a body that is not JSON: {_excerpt(text, 120)}",
                                status=200) from exc
    if not isinstance(value, dict):
        raise TransientApiError("HTTP 200 with a JSON body that is not an object", status=200)
    return value


def assemble_sse(lines: Iterator[str]) -> dict[str, Any]:
    """Turns the chunk stream into the shape of a non-streaming completion.

    Content deltas are concatenated, usage comes from the final ``choices: []`` chunk, comment
    lines are ignored; a stream that ends before ``data: [DONE]`` is a transient failure.
    """
    parts: list[str] = []
    finish: str | None = None
    usage: dict[str, Any] | None = None
    meta: dict[str, Any] = {}
    for line in lines:
        if not line or line.startswith(":"):
            continue
        if not line.startswith("data:"):
            continue  # "event:", "id:", "retry:" fields carry nothing for us
        payload = line[5:].strip()
        if payload == "[DONE]":
            return {
                "id": meta.get("id"), "object": "chat.completion", "created": meta.get("created"),
                "model": meta.get("model"),
                "choices": [{"index": 0, "finish_reason": finish or "stop",
                             "message": {"role": "assistant", "content": "".join(parts)}}],
                "usage": usage or {},
                "streamed": True,
            }
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise TransientApiError(f"malformed stream event: {_excerpt(payload, 120)}",
                                    status=200) from exc
        if "error" in event:
            err = event["error"]
            status = int(err.get("code", 500)) if str(err.get("code", "")).isdigit() else 500
            raise classify(status, json.dumps(event), httpx.Headers())
        for k in ("id", "created", "model"):
            meta.setdefault(k, event.get(k))
        if isinstance(event.get("usage"), dict):
            usage = event["usage"]
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    raise TransientApiError("stream ended without [DONE]", status=200)


def mime_for(fmt: str) -> str:
    """The data-URL MIME type for a sniffed format the API accepts."""
    return MIME_BY_FORMAT[fmt]
