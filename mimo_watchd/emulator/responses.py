"""Success bodies of the API: the chat completion (section 2) and its SSE stream (section 3)."""

from __future__ import annotations

import re
from typing import Any

from mimo_watchd.emulator.faults import encode_json

PROMPT_OVERHEAD_TOKENS = 21  # gateway prompt tokens around the audio [OBS]
THINK_BLOCK = "<think>\nTranscribe the audio.\n</think>\n"


def usage(samples: int, sample_rate: int, completion_tokens: int) -> dict[str, Any]:
    """The ``usage`` object for ``samples`` of decoded audio.

    Integer arithmetic, so 4.0 s gives exactly 25 audio tokens and 4 seconds.
    """
    audio_tokens = -(-samples * 25 // (4 * sample_rate))  # ceil(6.25 * s)
    prompt_tokens = audio_tokens + PROMPT_OVERHEAD_TOKENS
    return {
        "completion_tokens": completion_tokens,
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": 0},
        # cached_tokens mirrors the published example (46 prompt -> 45 cached); it means nothing.
        "prompt_tokens_details": {"audio_tokens": audio_tokens, "cached_tokens": prompt_tokens - 1},
        "seconds": -(-samples // sample_rate),  # ceil(s)
    }


def tagged(text: str, language: str) -> str:
    """``text`` as the open model emits it: a think block and a language tag."""
    tag = "chinese" if language == "zh" else "english"
    return f"{THINK_BLOCK}<{tag}>{text}</{tag}>"


def completion(
    request_id: str, created: int, model: str, content: str, finish_reason: str,
    use: dict[str, Any] | None,
) -> dict[str, Any]:
    """The non-streaming response object (without ``usage`` when ``use`` is None)."""
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "audio": None,
                    "tool_calls": None,
                    "audio_tokens": [],
                },
            }
        ],
    }
    if use is not None:
        body["usage"] = use
    return body


def pieces(content: str) -> list[str]:
    """``content`` cut the way the model streams it: ``"Good"``, ``" morning"``, ``"."``."""
    parts = re.findall(r"\s*(?:[^\s.]+|\.)|\s+$", content)
    return parts if "".join(parts) == content else [content]


def sse_events(
    request_id: str, created: int, model: str, content: str, finish_reason: str,
    use: dict[str, Any] | None,
) -> list[bytes]:
    """Every ``data:`` event of a streamed answer, in order, ending with ``[DONE]``.

    The keys are the published ones (mimo-api.md s.3): each delta carries the message's keys
    plus ``reasoning_content``; only the finish chunk has ``usage: null``; the usage chunk has
    ``choices: []`` (left out when ``use`` is None).
    """

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return b"data: " + encode_json(body) + b"\n\n"

    def delta(text: str | None, role: str | None, finish: str | None) -> dict[str, Any]:
        return {
            "index": 0,
            "delta": {"content": text, "role": role, "tool_calls": None, "audio": None,
                      "audio_tokens": [], "reasoning_content": None},
            "finish_reason": finish,
        }

    events = [chunk([delta("", "assistant", None)])]
    events += [chunk([delta(p, None, None)]) for p in pieces(content)]
    events.append(chunk([delta(None, None, finish_reason)], usage=None))
    if use is not None:
        events.append(chunk([], usage=use))
    events.append(b"data: [DONE]\n\n")
    return events


def error_event(body: dict[str, Any]) -> bytes:
    """An error body as the one ``data:`` event of a stream."""
    return b"data: " + encode_json(body) + b"\n\n"
