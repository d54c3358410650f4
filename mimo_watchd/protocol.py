"""The MiMo chat-completions protocol as pure functions: the request body, reading an answer
(one JSON body or a stream of server-sent events), classifying errors, reading ``usage``, and
scrubbing secrets out of anything the API sent.

Nothing here does I/O: every function takes bytes, strings or dicts, and is unit-tested that
way (``tests/test_protocol.py``). ``client.MimoClient`` does the HTTP around it. The facts
come from ``/work/shared/mimo-api.md`` (cited as "s.N" below).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from mimo_watchd.errors import (
    ApiError,
    AudioError,
    OperatorError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)

# s.2: the open model's tags, stripped defensively (hosted answers show none).
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LANG_TAG = re.compile(r"</?\s*(?:chinese|english)\s*>", re.IGNORECASE)
# s.4: 402 was also seen unwrapped, saying "Insufficient account funds" under another status.
_FUNDS = re.compile(r"insufficient|balance|funds|arrear", re.IGNORECASE)
# s.1: pay-as-you-go keys start with "sk-", Token Plan keys with "tp-". A gateway that echoes a
# key may mask its middle ("sk-abc1****wxyz"), hence the "*" and "." among the characters.
_KEY_LIKE = re.compile(r"(?<![A-Za-z0-9])((?:sk|tp)-)[A-Za-z0-9_\-*.]{4,}")
# s.2: why an answer stopped short: the output cap, or the model's own loop guard (s.7).
TRUNCATED = ("length", "repetition_truncation")
USAGE_FIELDS = ("seconds", "prompt_tokens", "completion_tokens", "total_tokens", "audio_tokens")

Usage = dict[str, int | float | None]


@dataclass(frozen=True)
class Transcript:
    """What one paid answer says: its text (tags stripped), why it stopped, its usage."""

    text: str
    finish_reason: str
    request_id: str | None
    usage: dict[str, Any]  # as sent ({} when the answer had none)
    attempts: int
    api_seconds: float
    raw: dict[str, Any] = field(repr=False)

    @property
    def no_speech(self) -> bool:
        return self.text == ""

    @property
    def truncated(self) -> bool:
        """The answer stopped before the audio's end (``finish_reason`` length, or
        repetition_truncation): the caller re-splits the audio."""
        return self.finish_reason in TRUNCATED


def request_body(data: bytes, mime: str, *, model: str, language: str, stream: bool,
                 max_b64_chars: int) -> bytes:
    """The JSON request body with exactly the documented fields (s.1): one user message with
    one ``input_audio`` part as a data URL, ``asr_options.language``, ``stream``.

    Audio whose base64 form exceeds ``max_b64_chars`` is refused here, before anything is sent
    or paid (s.1: the base64 string must not exceed 10 MB)."""
    b64 = base64.b64encode(data).decode("ascii")
    if len(b64) > max_b64_chars:
        raise AudioError(f"audio too large for one request: {len(b64):,} base64 characters "
                         f"(limit {max_b64_chars:,})")
    body = {
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": f"data:{mime};base64,{b64}"}}]}],
        "asr_options": {"language": language},
        "stream": stream,
    }
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def clean_text(content: str | None) -> str:
    """The transcript without model tags: ``<think>…</think>`` and ``<chinese>``/``<english>``."""
    if not content:
        return ""
    text = _THINK.sub("", content)
    text = _LANG_TAG.sub("", text)
    return text.strip()


def parse_completion(raw: Mapping[str, Any], *, attempts: int = 1, api_seconds: float = 0.0
                     ) -> Transcript:
    """Reads a (journaled) chat.completion body (s.2).

    Raises the error an error body holds (``error_in_body``), ``PermanentApiError`` for
    ``content_filter`` (s.2: moderation inside a 200, handled like 421) and
    ``TransientApiError`` for a body that is no completion. A truncated answer (``length``,
    ``repetition_truncation``) is returned: re-splitting is the caller's decision."""
    error = error_in_body(raw)
    if error is not None:
        raise error
    try:
        choice = raw["choices"][0]
        content = choice["message"].get("content")
        finish = str(choice.get("finish_reason") or "stop")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TransientApiError(f"HTTP 200 with a body that is no completion: {excerpt(raw)}",
                                status=200) from exc
    request_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    if finish == "content_filter":
        raise PermanentApiError("moderation block: the API filtered this audio "
                                "(finish_reason content_filter)", status=200,
                                body={"finish_reason": finish}, request_id=request_id)
    usage = raw.get("usage")
    return Transcript(text=clean_text(content if isinstance(content, str) else None),
                      finish_reason=finish, request_id=request_id,
                      usage=dict(usage) if isinstance(usage, dict) else {},
                      attempts=attempts, api_seconds=api_seconds, raw=dict(raw))


def error_in_body(raw: Mapping[str, Any]) -> ApiError | None:
    """The error that an HTTP 200 body holds instead of an answer, classified by its ``code``
    exactly as that status would be; None for an answer.

    s.7: a third-party client guards against ``{"error": {...}}`` inside a 200. The unwrapped
    form seen with 402 (s.4, ``{"type", "message"}`` and no ``choices``) counts too."""
    err = raw.get("error")
    if err is None and "choices" not in raw and isinstance(raw.get("message"), str):
        err = raw
    if not isinstance(err, dict | str) or (isinstance(err, str) and "choices" in raw):
        return None
    code = str(err.get("code", "")) if isinstance(err, dict) else ""
    status = int(code) if code.isdigit() and 100 <= int(code) <= 599 else 500
    label = f"HTTP 200 with an error body (code {code or 'none'})"
    return classify(status, json.dumps(dict(raw), ensure_ascii=False), label=label)


def classify(status: int, body_text: str, *, retry_after: float | None = None,
             location: str | None = None, label: str | None = None,
             secrets: Iterable[str] = ()) -> ApiError:
    """The error an answer of HTTP ``status`` with ``body_text`` stands for (s.4's table).

    The body may be JSON, HTML or empty (s.1: a wrong path answers HTML). Every ``secrets``
    (the configured key) and anything that looks like a key is scrubbed from the message and
    the body kept, so neither can reach an error file, the ledger or the status."""
    text = scrub(body_text, secrets)
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = " - ".join(str(x) for x in (err.get("message"), err.get("param")) if x)
    elif isinstance(err, str):
        message = err
    elif isinstance(body, dict) and "message" in body:
        message = str(body["message"])  # the unwrapped shape seen with 402 (s.4)
    else:
        message = excerpt(text.strip(), 120) if text.strip() else "(empty body)"
    kept = body if body is not None else (excerpt(text, 500) or None)
    what = f"{label or f'HTTP {status}'}: {message}"
    kw: dict[str, Any] = {"status": status, "body": kept}
    if 300 <= status < 400:
        where = f"to {scrub(location, secrets)}" if location else "elsewhere"
        return OperatorError(f"{what} (the API redirects {where}: correct api.base_url)", **kw)
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
        return RateLimitedError(what, retry_after=retry_after, **kw)
    if status in (408, 425) or status >= 500:
        return TransientApiError(what, retry_after=retry_after, **kw)
    return PermanentApiError(what, **kw)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) as seconds from ``now`` (s.4: not documented
    or seen, honoured if it appears); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def parse_json_answer(text: str) -> dict[str, Any]:
    """The JSON object of a 200 body; ``TransientApiError`` when it is not one."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TransientApiError(f"HTTP 200 with a body that is not JSON: {excerpt(text, 120)}",
                                status=200) from exc
    if not isinstance(value, dict):
        raise TransientApiError("HTTP 200 with a JSON body that is not an object", status=200)
    return value


class StreamedAnswer:
    """A streamed answer (s.3), fed line by line, as the body of a non-streaming completion.

    The stream's parts: a role chunk, content chunks, a finish chunk (``finish_reason``), a
    usage chunk (``choices: []``), ``data: [DONE]``. An answer whose finish chunk arrived is
    complete even if ``[DONE]`` (or the usage chunk) never does: s.7, two third-party clients
    accept such a stream, and paying again for the same text would be waste. Without the
    finish chunk the answer is incomplete: a transient failure."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._meta: dict[str, Any] = {}
        self.done = False  # data: [DONE] arrived

    @property
    def finished(self) -> bool:
        """Whether the finish chunk arrived: the transcript is whole."""
        return self._finish is not None

    def feed(self, line: str) -> None:
        """One line of the event stream; raises the error of an error event."""
        if self.done or not line.startswith("data:"):
            return  # comments (": keep-alive"), "event:", "id:", "retry:" carry nothing for us
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise TransientApiError(f"malformed stream event: {excerpt(payload, 120)}",
                                    status=200) from exc
        if not isinstance(event, dict):
            raise TransientApiError(f"malformed stream event: {excerpt(payload, 120)}",
                                    status=200)
        error = error_in_body(event)
        if error is not None:
            raise error
        for k in ("id", "created", "model"):
            self._meta.setdefault(k, event.get(k))
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self._parts.append(delta["content"])
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])

    def completion(self) -> dict[str, Any]:
        """The answer in the shape of a non-streaming completion; ``TransientApiError`` when
        the finish chunk never came."""
        if self._finish is None:
            raise TransientApiError("stream ended before its finish chunk", status=200)
        return {
            "id": self._meta.get("id"), "object": "chat.completion",
            "created": self._meta.get("created"), "model": self._meta.get("model"),
            "choices": [{"index": 0, "finish_reason": self._finish,
                         "message": {"role": "assistant", "content": "".join(self._parts)}}],
            "usage": self._usage,
            "streamed": True,
            "stream_done": self.done,
        }


def assemble_sse(lines: Iterable[str]) -> dict[str, Any]:
    """A whole event stream as the body of a non-streaming completion (``StreamedAnswer``)."""
    answer = StreamedAnswer()
    for line in lines:
        answer.feed(line)
    return answer.completion()


def _number(value: Any) -> int | float | None:
    """``value`` when it is a finite number (as sent: 4.6 stays 4.6), else None (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def read_usage(usage: Mapping[str, Any] | None) -> Usage:
    """The usage fields we account for (s.2), each as sent or None when the answer did not
    say; ``audio_tokens`` lifted out of ``prompt_tokens_details`` (or read from the top, where
    our own sidecars keep it)."""
    usage = usage if isinstance(usage, Mapping) else {}
    out: Usage = {k: _number(usage.get(k)) for k in USAGE_FIELDS}
    details = usage.get("prompt_tokens_details")
    if out["audio_tokens"] is None and isinstance(details, Mapping):
        out["audio_tokens"] = _number(details.get("audio_tokens"))
    return out


def scrub(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` (a string, or dicts and lists of them) with each of ``secrets`` replaced by
    ``***`` and anything that looks like an API key (``sk-…``, ``tp-…``, s.1) by ``sk-***``.

    A gateway may echo the key in an error (``"Incorrect API key provided: sk-…"``); whatever
    the API sends passes through here before it is stored or shown."""
    keys = [s for s in secrets if s]
    if isinstance(value, str):
        for s in keys:
            value = value.replace(s, "***")
        return _KEY_LIKE.sub(r"\1***", value)
    if isinstance(value, dict):
        return {k: scrub(v, keys) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, keys) for v in value)
    return value


def excerpt(value: Any, limit: int = 300) -> str:
    """At most ``limit`` characters of ``value`` (JSON-encoded unless a string)."""
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)[:limit]
    return s[:limit]
