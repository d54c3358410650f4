"""The emulator's shared data: its configuration, the record of one call, and the two interfaces
(the emulator, one connection) that the request handling sees.

This module sits below ``server``, ``control`` and ``transcribe``: they all import it and it
imports none of them, so the package has no import cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mimo_watchd.emulator.faults import FaultBook, FaultRule
from mimo_watchd.emulator.limits import TPM_COUNTS, AccountLimits

# Xiaomi's published example: 4 s of English speech -> 20 completion tokens (mimo-api.md s.2, s.7).
COMPLETION_TOKENS_PER_SECOND = 5.0
# KurtDu/mimo-asr-vllm README "Long audio" (mimo-api.md s.7): accuracy collapses past ~2 minutes.
QUALITY_WINDOW_SECONDS = 120.0


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything about one emulator run; limits and latency follow ``mimo-api.md`` section 5."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, read it back from ``Emulator.url``
    base_path: str = "/v1"
    model: str = "mimo-v2.5-asr"
    api_keys: frozenset[str] | None = None  # None: any non-empty key is accepted
    # Both auth headers sent with different keys: the record only says sending both is tolerated
    # (with one key). Strict by default: every key sent must be valid; True accepts either.
    accept_either_key: bool = False
    max_b64_chars: int = 10_000_000
    rpm: int | None = 100
    tpm: int | None = 10_000
    tpm_counts: str = "total"  # what the TPM window charges: "total" or "prompt" tokens [INF]
    max_concurrency: int | None = None
    window_seconds: float = 60.0
    latency_base: float = 0.3
    latency_per_second: float = 0.03
    latency_scale: float = 1.0
    completion_tokens_per_second: float = COMPLETION_TOKENS_PER_SECOND
    max_output_tokens: int = 2048  # beyond this the answer is cut with finish_reason "length"
    # [INF] 8K context minus ~2K output: longer audio (~16 min) is refused with a 400.
    max_prompt_tokens: int | None = 6144
    # Past this much audio in one request, a share of the words is lost (None: never). Off by
    # default here, so in-process tests of long chunks keep their exact words; the command line
    # (``python -m mimo_watchd.emulator``) turns it on at QUALITY_WINDOW_SECONDS.
    quality_window_seconds: float | None = None
    faults: tuple[FaultRule, ...] = ()
    fault_rate: Mapping[str, float] = field(default_factory=dict)
    seed: int | None = None
    slow_seconds: float = 5.0  # the pause of a "slow" fault whose rule has no delay
    sse_comments: bool = False  # interleave ": keep-alive" comment lines in streams
    retry_after: int | None = None  # send Retry-After on rate-limit 429s (never seen live)
    verbose: bool = False  # log one line per request (never the key)

    def __post_init__(self) -> None:
        if self.api_keys is not None and not isinstance(self.api_keys, frozenset):
            object.__setattr__(self, "api_keys", frozenset(self.api_keys))
        object.__setattr__(self, "faults", tuple(self.faults))
        path = self.base_path.strip("/")
        object.__setattr__(self, "base_path", "/" + path if path else "")
        if self.tpm_counts not in TPM_COUNTS:
            raise ValueError(f"tpm_counts must be one of {', '.join(TPM_COUNTS)}")
        if self.completion_tokens_per_second < 0:
            raise ValueError("completion_tokens_per_second must be >= 0")
        if self.quality_window_seconds is not None and self.quality_window_seconds <= 0:
            raise ValueError("quality_window_seconds must be > 0 (None turns it off)")


@dataclass
class CallRecord:
    """What the emulator saw and did for one API request."""

    time: float  # time.time() when the request was read (and counted in both windows)
    method: str
    path: str
    status: int | None = None  # HTTP status sent; None when the connection was dropped first
    auth_style: str = "none"  # api-key / bearer / both / none
    key_ok: bool = False
    body: dict[str, Any] | None = None  # the JSON received, audio data as "<N base64 chars>"
    stream: bool = False
    language: str | None = None
    mime: str | None = None
    audio_sha256: str | None = None  # of the decoded base64 bytes
    duration: float | None = None  # seconds of decoded audio
    words: list[str] = field(default_factory=list)  # tone words heard, before any loss
    content: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None  # as sent (None when a fault left it out)
    request_id: str | None = None
    fault: str | None = None
    error: str | None = None  # why it was refused or broken, for test failure messages
    # The model ran to the end, so the account bills it, whether or not the answer reached the
    # client (mimo-api.md s.7: "Billing of lost answers" [INF]).
    billed: bool = False
    # A whole transcript with finish_reason "stop" was sent, in the documented shape, to a client
    # still connected: what the client could use (successful_calls / success_counts).
    ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``GET /_emulator/calls`` returns)."""
        return asdict(self)

    def summary(self) -> str:
        """One log line: what was received and what was answered (never a key or the audio)."""
        received = f"{self.method} {self.path} auth={self.auth_style}"
        if self.duration is not None:
            received += (f" {self.mime} {self.duration:.2f}s lang={self.language}"
                         f" stream={str(self.stream).lower()}")
        answered = f"status={self.status if self.status is not None else 'dropped'}"
        if self.fault:
            answered += f" fault={self.fault}"
        if self.finish_reason:
            answered += f" finish={self.finish_reason}"
        if self.content is not None:
            answered += f" chars={len(self.content)}"
        if self.usage:
            answered += (f" tokens={self.usage.get('prompt_tokens')}"
                         f"+{self.usage.get('completion_tokens')}")
        answered += f" billed={str(self.billed).lower()} delivered={str(self.ok).lower()}"
        if self.error:
            answered += f" ({self.error})"
        return f"{received} -> {answered}"


class Connection(Protocol):
    """What request handling needs of one HTTP connection (the server's handler)."""

    @property
    def command(self) -> str:
        """The request method."""

    def header(self, name: str) -> str | None:
        """A request header's value, None when absent."""

    def send_bytes(self, status: int, body: bytes, content_type: str,
                   headers: Iterable[tuple[str, str]] = (), *, cut_at: int | None = None) -> bool:
        """Send a whole response (or only ``cut_at`` body bytes, then drop the connection)."""

    def start_stream(self, status: int, content_type: str) -> None:
        """Send the status line and headers of a chunked response (OSError: client gone)."""

    def write_chunk(self, data: bytes) -> None:
        """Send one chunk of a chunked response, flushed (OSError: client gone)."""

    def end_stream(self) -> None:
        """Send the last (empty) chunk of a chunked response (OSError: client gone)."""

    def abort(self) -> None:
        """Close the connection at once."""

    def peer_closed(self) -> bool:
        """Whether the client has closed its side."""


class Host(Protocol):
    """What request handling needs of the running emulator."""

    @property
    def config(self) -> EmulatorConfig:
        """The run's configuration."""

    @property
    def faults(self) -> FaultBook:
        """The queued faults and the random fault mix."""

    @property
    def limits(self) -> AccountLimits:
        """The account's windows."""

    @property
    def stopping(self) -> threading.Event:
        """Set while the emulator shuts down."""

    @property
    def url(self) -> str:
        """The API base URL."""

    @property
    def endpoint(self) -> str:
        """The path of the one API route."""

    @property
    def calls(self) -> list[CallRecord]:
        """A snapshot of every API request so far."""

    def add_fault(self, rule: FaultRule) -> None:
        """Queue a fault rule."""

    def reset(self) -> None:
        """Forget calls, faults and windows."""

    def latency(self, seconds: float) -> float:
        """How long the answer for ``seconds`` of audio takes."""
