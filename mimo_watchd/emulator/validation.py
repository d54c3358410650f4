"""Strict validation of a chat-completions ASR request, as the MiMo gateway does it.

Anything the contract (``mimo-api.md`` sections 1 and 6) does not allow is refused with the
status and body the gateway uses, so a client bug shows up in tests instead of in production.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from mimo_watchd.emulator.faults import (
    ERROR_BODIES,
    TEXT_PART_PARAM,
    model_not_found,
    param_incorrect,
)

ALLOWED_FIELDS = frozenset({"model", "messages", "asr_options", "stream"})
# OpenAI transcription fields: live calls answered these with 500, not 400 [OBS].
TRANSCRIPTION_FIELDS = frozenset({"response_format", "timestamp_granularities"})
LANGUAGES = ("auto", "zh", "en")
MIME_CONTAINERS = {"audio/wav": "wav", "audio/mpeg": "mp3", "audio/mp3": "mp3"}
_DATA_URL = re.compile(r"data:([^;,]*);base64,(.*)", re.DOTALL)


class Rejection(Exception):
    """The request is refused with ``status`` and the JSON ``body``; ``str()`` says why."""

    def __init__(self, status: int, body: dict[str, Any], why: str) -> None:
        super().__init__(why)
        self.status = status
        self.body = body


def bad(detail: str) -> Rejection:
    """A 400 Param Incorrect rejection."""
    return Rejection(400, param_incorrect(detail), detail)


@dataclass
class AudioRequest:
    """A request that passed validation, with its audio decoded from base64."""

    model: str
    stream: bool
    language: str
    mime: str
    container: str  # "wav" or "mp3": what the bytes were sniffed and will be decoded as
    audio: bytes
    b64_chars: int


def auth_style(api_key: str | None, authorization: str | None) -> tuple[str, list[str]]:
    """Which auth headers the request carries (``api-key``/``bearer``/``both``/``none``) and
    the key each of them holds, in that order ("" for a header that holds none)."""
    keys: list[str] = []
    if api_key is not None:
        keys.append(api_key.strip())
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        keys.append(value.strip() if scheme.lower() == "bearer" else "")
    present = (api_key is not None, authorization is not None)
    style = {(True, True): "both", (True, False): "api-key", (False, True): "bearer"}
    return style.get(present, "none"), keys


def check_key(keys: list[str], accepted: frozenset[str] | None, *, either: bool = False) -> bool:
    """Whether the keys sent are acceptable (any non-empty key when ``accepted`` is None).

    With both headers sent, every key must be valid; ``either`` accepts one valid key (the
    record only says sending both is tolerated, mimo-api.md s.1: the strict reading is default).
    """

    def valid(key: str) -> bool:
        return bool(key) and (accepted is None or key in accepted)

    if not keys:
        return False
    return any(map(valid, keys)) if either else all(map(valid, keys))


def unauthorized() -> Rejection:
    """The documented 401."""
    return Rejection(401, ERROR_BODIES["401"], "missing or invalid API key")


def parse_body(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object of the request body (400 when it is not one)."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise bad("Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    return body


def redact(body: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``body`` with every audio ``data`` string replaced by ``<N base64 chars>``
    (N counts the base64 payload, without any ``data:`` prefix)."""

    def walk(node: Any, parent_key: str | None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, None) for v in node]
        if parent_key == "data" and isinstance(node, str):
            match = _DATA_URL.fullmatch(node)
            return f"<{len(match.group(2) if match else node)} base64 chars>"
        return node

    redacted: dict[str, Any] = walk(body, None)
    return redacted


def validate(body: dict[str, Any], *, model: str, max_b64_chars: int) -> AudioRequest:
    """Check every field of a chat-completions ASR request; raise ``Rejection`` at the first
    problem, in the order a gateway meets them (fields, model, messages, options, audio)."""
    # The text-part refusal (400) wins over every other problem, unknown transcription fields
    # included: the live probe sent both and got the 400 (mimo-api.md s.1 [OBS]).
    _refuse_text_parts(body.get("messages"))
    if TRANSCRIPTION_FIELDS & body.keys():
        raise Rejection(500, ERROR_BODIES["500"], "OpenAI transcription field")
    unknown = sorted(body.keys() - ALLOWED_FIELDS)
    if unknown:
        raise bad(f"unknown field: {unknown[0]}")
    if "model" not in body:
        raise bad("model is required")
    if not isinstance(body["model"], str) or body["model"] != model:
        raise Rejection(404, model_not_found(body["model"]), "unknown model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean")
    language = _language(body.get("asr_options"))
    audio = _audio_part(body.get("messages"))
    mime, container, payload = _audio_payload(audio, max_b64_chars)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad("input_audio.data is not valid base64") from None
    if not data:
        raise bad("input_audio.data is empty")
    sniffed = sniff(data)
    if sniffed is None:
        raise bad("unsupported audio format: only wav and mp3 are supported")
    if sniffed != container:
        raise bad(f"audio content is {sniffed} but was declared as {mime}")
    return AudioRequest(body["model"], stream, language, mime, container, data, len(payload))


def _language(options: Any) -> str:
    """``asr_options.language`` (``auto`` when omitted)."""
    if options is None:
        return "auto"
    if not isinstance(options, dict):
        raise bad("asr_options must be an object")
    extra = sorted(options.keys() - {"language"})
    if extra:
        raise bad(f"unknown field: asr_options.{extra[0]}")
    language = options.get("language", "auto")
    if language not in LANGUAGES:
        raise bad(f"asr_options.language must be one of {', '.join(LANGUAGES)}")
    return str(language)


def _refuse_text_parts(messages: Any) -> None:
    """The observed 400 when any message holds a ``{"type": "text"}`` part."""
    if not isinstance(messages, list):
        return
    for message in messages:
        parts = message.get("content") if isinstance(message, dict) else None
        if isinstance(parts, list) and any(
            isinstance(p, dict) and p.get("type") == "text" for p in parts
        ):
            raise bad(TEXT_PART_PARAM)


def _audio_part(messages: Any) -> dict[str, Any]:
    """The ``input_audio`` object of the one user message's one content part."""
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty array")
    if len(messages) != 1:
        raise bad("messages must contain exactly one user message")
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        raise bad("messages[0].role must be user")
    if message.keys() - {"role", "content"}:
        raise bad("messages[0] has unknown fields")
    content = message.get("content")
    if not isinstance(content, list) or len(content) != 1:
        raise bad("messages[0].content must hold exactly one input_audio part")
    part = content[0]
    if not isinstance(part, dict) or part.get("type") != "input_audio":
        raise bad("messages[0].content[0].type must be input_audio")
    if part.keys() - {"type", "input_audio"}:
        raise bad("messages[0].content[0] has unknown fields")
    audio = part.get("input_audio")
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        raise bad("input_audio.data is required")
    if audio.keys() - {"data", "format"}:
        raise bad("input_audio has unknown fields")
    return audio


def _audio_payload(audio: dict[str, Any], max_b64_chars: int) -> tuple[str, str, str]:
    """(MIME type, container, base64 payload) of an ``input_audio`` object."""
    data: str = audio["data"]
    # The limit counts the whole string, prefix included: the stricter reading of "10 MB".
    if len(data) > max_b64_chars:
        raise bad(f"input_audio.data exceeds {max_b64_chars} base64 characters")
    fmt = audio.get("format")
    if fmt is not None and fmt not in ("wav", "mp3"):
        raise bad("input_audio.format must be wav or mp3")
    match = _DATA_URL.fullmatch(data) if data.startswith("data:") else None
    if data.startswith("data:") and match is None:
        raise bad("input_audio.data is not a base64 data URL")
    if match is None:
        if fmt is None:
            raise bad("input_audio.format is required when data is pure base64")
        return ("audio/wav" if fmt == "wav" else "audio/mpeg"), fmt, data
    mime = match.group(1).strip().lower()
    if mime not in MIME_CONTAINERS:
        raise bad(f"unsupported audio MIME type {mime!r}: use audio/wav or audio/mpeg")
    container = MIME_CONTAINERS[mime]
    if fmt is not None and fmt != container:
        raise bad(f"input_audio.format {fmt} contradicts the data URL type {mime}")
    return mime, container, match.group(2)


def sniff(data: bytes) -> str | None:
    """``wav`` or ``mp3`` from the leading bytes, else None (the gateway trusts no label)."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3":
        return "mp3"
    # MPEG audio frame sync, version not "reserved", layer III (ADTS AAC shares the sync word
    # but has layer bits 00, so it is refused here like the real gateway refuses m4a).
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        version = (data[1] >> 3) & 0b11
        layer = (data[1] >> 1) & 0b11
        if version != 0b01 and layer == 0b01:
            return "mp3"
    return None
