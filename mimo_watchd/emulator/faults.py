"""Error bodies of the MiMo gateway and the faults the emulator can inject.

Bodies marked [DOC]/[OBS] are byte-for-byte the examples in ``mimo-api.md`` section 4; the others
([INF]) follow the same envelope because nobody has published a real one.

A fault is drawn after the audio is decoded (so ``when_word`` can match) and after the limits.
"Billed" says whether the account charges the call (the model ran: ``CallRecord.billed``):

=====================  =====================================================================
400 .. 503             that status with its body (400: Param Incorrect, param "injected
                       fault"; 429: the limitation body; 402-unwrapped: the bare
                       ``{"type", "message"}``). Not billed.
404-html               openresty's HTML 404 page, ``text/html``. Not billed.
500-empty              500 with ``Content-Length: 0``. Not billed.
200-401 .. 200-500     HTTP 200 whose body is that status's ``{"error": {...}}`` body (a third-
                       party client guards against it, mimo-api.md s.7); a stream gets it as
                       its only ``data:`` event. Not billed.
slow                   waits ``delay`` (or ``EmulatorConfig.slow_seconds``), then answers
                       normally. Billed even when the client gave up meanwhile.
hang                   never answers; gives up when the client closes or the emulator stops.
                       Not billed.
drop-headers           the model runs, then the connection closes before the status line.
                       Billed.
drop-body              200 and headers with the full Content-Length, half the body, then
                       closes (streams: like drop-stream). Billed.
drop-stream            a stream's role chunk and one more event, then closes mid-chunked-body
                       (plain requests: like drop-body). Billed.
no-done                a complete stream (finish chunk, usage chunk), cleanly ended, without
                       ``data: [DONE]`` (plain requests: no effect). Billed.
length                 the first half of the words, no full stop, ``finish_reason: "length"``
content_filter         HTTP 200, content ``""``, ``finish_reason: "content_filter"``
tags                   ``<think>…</think>`` then the text in ``<english>`` (``<chinese>`` for zh)
empty                  HTTP 200, content ``""``, ``finish_reason: "stop"``
looping                one phrase (the first words heard) repeated LOOP_REPEATS times,
                       ``finish_reason: "stop"``: the looping output MiMo models produce
                       (a third-party client detects it and re-splits, mimo-api.md s.7)
repetition_truncation  the same looping text with ``finish_reason: "repetition_truncation"``
                       (MiMo chat models' own report of it)
no-usage               the answer without ``usage`` (plain: no key; stream: no usage chunk),
                       as in third-party fixtures
no-seconds             ``usage`` without ``seconds``
float-seconds          ``usage.seconds`` as a float with one decimal (e.g. 4.6)
=====================  =====================================================================

Every kind from ``length`` down answers HTTP 200 after the model ran: billed.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

OPENRESTY_404 = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>openresty</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
TEXT_PART_PARAM = "ASR request must not include text parts; text prompt is injected by the gateway"

# Key order follows the published examples (the 401 one really starts with "message").
ERROR_BODIES: dict[str, dict[str, Any]] = {
    "401": {
        "error": {
            "message": "Invalid API Key",
            "param": "Please provide valid API Key",
            "code": "401",
            "type": "invalid_key",
        }
    },
    # [INF] only the unwrapped form below has been seen; this is the envelope applied to it.
    "402": {
        "error": {
            "code": "402",
            "message": "Insufficient account funds",
            "param": "",
            "type": "insufficient_funds",
        }
    },
    "402-unwrapped": {
        "type": "server_error",
        "message": "Upstream request failed: Insufficient account funds",
    },
    "403": {"error": {"code": "403", "message": "Illegal access", "type": "illegal_access"}},
    "421": {
        "error": {
            "code": "421",
            "message": "Moderation Block",
            "param": "The request was rejected because it was considered high risk",
            "type": "content_filter",
        }
    },
    "429": {"error": {"code": "429", "message": "Too many requests", "type": "limitation"}},
    # [INF] the observed 500s (unknown transcription fields) were reported without a body.
    "500": {"error": {"code": "500", "message": "Internal Server Error", "param": "", "type": ""}},
    "503": {
        "error": {
            "code": "503",
            "message": "Service Unavailable",
            "param": "The server is overloaded, please try again later",
            "type": "",
        }
    },
}

# Faults answered with an error status and a canned body, instead of the transcript.
STATUS_FAULTS: dict[str, int] = {
    "400": 400,
    "401": 401,
    "402": 402,
    "402-unwrapped": 402,
    "403": 403,
    "404-html": 404,
    "421": 421,
    "429": 429,
    "500": 500,
    "500-empty": 500,
    "503": 503,
}
# Faults answered with HTTP 200 and an error body of that status.
OK_ERROR_FAULTS: dict[str, str] = {f"200-{code}": code for code in ("401", "402", "429", "500")}
# Faults that break the connection instead of answering (never a usable response).
CONNECTION_FAULTS = ("hang", "drop-headers", "drop-body", "drop-stream", "no-done")
# Faults that answer 200 but change the transcript or its finish_reason.
CONTENT_FAULTS = ("length", "content_filter", "tags", "empty", "looping", "repetition_truncation")
# Faults that answer 200 with a ``usage`` unlike the documented one.
USAGE_FAULTS = ("no-usage", "no-seconds", "float-seconds")
FAULT_KINDS: tuple[str, ...] = (*STATUS_FAULTS, *OK_ERROR_FAULTS, "slow", *CONNECTION_FAULTS,
                                *CONTENT_FAULTS, *USAGE_FAULTS)


def param_incorrect(detail: str) -> dict[str, Any]:
    """The gateway's 400 body, with ``detail`` saying what is wrong."""
    return {"error": {"code": "400", "message": "Param Incorrect", "param": detail, "type": ""}}


def model_not_found(model: object) -> dict[str, Any]:
    """[INF] The 404 for an unknown model: JSON (the gateway routes the path; the model is not)."""
    return {
        "error": {
            "code": "404",
            "message": "Model Not Found",
            "param": f"model {model!r} does not exist",
            "type": "",
        }
    }


def encode_json(body: object) -> bytes:
    """Compact UTF-8 JSON, as the gateway sends it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class FaultRule:
    """Inject ``kind`` into the next ``times`` requests (None: all), optionally only into requests
    whose audio contains the tone word ``when_word``. ``delay`` is the pause of ``slow``."""

    kind: str
    times: int | None = 1
    when_word: str | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for every request)")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from its JSON form (what ``POST /_emulator/faults`` receives)."""
        unknown = set(data) - {"kind", "times", "when_word", "delay"}
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the rule."""
        return asdict(self)


class FaultBook:
    """The queue of fault rules plus the seeded random fault mix; safe across handler threads."""

    def __init__(
        self,
        rules: Iterable[FaultRule] = (),
        rates: Mapping[str, float] | None = None,
        seed: int | None = None,
    ) -> None:
        rates = dict(rates or {})
        for kind, p in rates.items():
            FaultRule(kind)  # validates the kind
            if not 0 <= p <= 1:
                raise ValueError(f"fault rate of {kind} must be within 0..1")
        if sum(rates.values()) > 1 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        self._rates = sorted(rates.items())  # sorted: the same seed gives the same faults
        self._seed = seed
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = [FaultRule(**r.to_dict()) for r in rules]
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        """Queue ``rule`` after the rules already queued."""
        with self._lock:
            self._rules.append(FaultRule(**rule.to_dict()))

    def pending(self) -> list[FaultRule]:
        """A copy of the queued rules."""
        with self._lock:
            return [FaultRule(**r.to_dict()) for r in self._rules]

    def reset(self) -> None:
        """Drop every queued rule and restart the random mix from its seed."""
        with self._lock:
            self._rules.clear()
            self._rng = random.Random(self._seed)

    def draw(self, words: Iterable[str]) -> FaultRule | None:
        """The fault for a request with these recognised words: the first matching queued rule
        (spending one of its ``times``), else a draw from the random mix, else None."""
        heard = set(words)
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.when_word is not None and rule.when_word not in heard:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        del self._rules[i]
                return FaultRule(rule.kind, 1, rule.when_word, rule.delay)
            if not self._rates:
                return None
            x = self._rng.random()
        for kind, p in self._rates:
            if x < p:
                return FaultRule(kind)
            x -= p
        return None
