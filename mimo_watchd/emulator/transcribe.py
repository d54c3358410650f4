"""One API request through the gateway's steps: auth, limits, validation, decoding, faults,
latency and the answer (see the order in ``server.py``)."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any

import av

from mimo_watchd.emulator import responses
from mimo_watchd.emulator.audiofile import iter_decoded
from mimo_watchd.emulator.faults import (
    ERROR_BODIES,
    OPENRESTY_404,
    STATUS_FAULTS,
    FaultRule,
    encode_json,
    param_incorrect,
)
from mimo_watchd.emulator.tones import Recognizer
from mimo_watchd.emulator.validation import (
    AudioRequest,
    Rejection,
    auth_style,
    bad,
    check_key,
    parse_body,
    redact,
    unauthorized,
    validate,
)

if TYPE_CHECKING:
    from mimo_watchd.emulator.server import CallRecord, Emulator, _Handler

SAMPLE_RATE = 16000  # the model works at 16 kHz; durations and tokens come from this decoding
JSON = "application/json"
KEEP_ALIVE = b": keep-alive\n\n"
BROKEN = ("drop-body", "drop-stream", "no-done")  # 200 status, but no usable answer


class Exchange:
    """The emulator's side of one API request; fills in its ``CallRecord`` as it goes."""

    def __init__(self, handler: _Handler, emulator: Emulator, call: CallRecord) -> None:
        self.handler = handler
        self.emulator = emulator
        self.config = emulator.config
        self.call = call

    def run(self, raw: bytes) -> None:
        """Answer the request whose body is ``raw``."""
        handler, call = self.handler, self.call
        if handler.command != "POST" or call.path != self.emulator.endpoint:
            call.error = "no such route"
            self._send(404, OPENRESTY_404, "text/html")
            return
        call.auth_style, keys = auth_style(
            handler.headers.get("api-key"), handler.headers.get("Authorization")
        )
        call.key_ok = check_key(keys, self.config.api_keys)
        if not call.key_ok:
            self._reject(unauthorized())
            return
        if not self.emulator.limits.enter():
            self._rate_limited("RPM or concurrency cap")
            return
        try:
            self._admitted(raw)
        finally:
            self.emulator.limits.leave()

    def _admitted(self, raw: bytes) -> None:
        call = self.call
        try:
            body = parse_body(raw, self.handler.headers.get("Content-Type"))
            call.body = redact(body)
            call.stream = body.get("stream") is True
            request = validate(
                body, model=self.config.model, max_b64_chars=self.config.max_b64_chars
            )
        except Rejection as rejection:
            self._reject(rejection)
            return
        call.language, call.mime = request.language, request.mime
        call.audio_sha256 = hashlib.sha256(request.audio).hexdigest()
        try:
            samples, words = self._recognize(request)
        except Rejection as rejection:
            self._reject(rejection)
            return
        call.duration, call.words = samples / SAMPLE_RATE, words
        cap = self.config.max_output_tokens
        use = responses.usage(samples, SAMPLE_RATE, min(len(words) + 1, cap))
        context = self.config.max_prompt_tokens
        if context is not None and use["prompt_tokens"] > context:
            self._reject(
                bad(f"audio too long: {use['prompt_tokens']} prompt tokens exceed {context}")
            )
            return
        if not self.emulator.limits.spend_tokens(use["total_tokens"]):
            self._rate_limited("TPM")
            return
        fault = self.emulator.faults.draw(words)
        call.fault = fault.kind if fault else None
        delay = self.emulator.latency(call.duration)
        if fault and fault.kind == "slow":
            delay += fault.delay or self.config.slow_seconds
        if self.emulator.stopping.wait(delay) if delay > 0 else self.emulator.stopping.is_set():
            call.error = "emulator stopped"
            self.handler.abort()
            return
        if self.handler.peer_closed():
            # The client timed out meanwhile: nobody will read this answer, so it must not count
            # as a delivered (``ok``) transcript in the paid-twice checks.
            call.error = "client gone before the answer"
            self.handler.abort()
            return
        self._answer(request, words, use, fault)

    def _recognize(self, request: AudioRequest) -> tuple[int, list[str]]:
        """(decoded samples at 16 kHz, recognised words); 400 when PyAV cannot decode it."""
        recognizer = Recognizer(SAMPLE_RATE)
        try:
            for block in iter_decoded(
                request.audio, sample_rate=SAMPLE_RATE, container_format=request.container
            ):
                recognizer.feed(block)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise bad(f"audio could not be decoded as {request.container}: {exc}") from None
        if recognizer.samples == 0:
            raise bad("audio contains no samples")
        return recognizer.samples, recognizer.finish()

    def _answer(
        self, request: AudioRequest, words: list[str], use: dict[str, Any], fault: FaultRule | None
    ) -> None:
        call, kind = self.call, fault.kind if fault else None
        if kind in STATUS_FAULTS:
            self._status_fault(str(kind))
            return
        if kind == "hang":
            call.error = "hung until the client left or the emulator stopped"
            while not self.emulator.stopping.wait(0.05) and not self.handler.peer_closed():
                pass
            self.handler.abort()
            return
        if kind == "drop-headers":
            call.error = "connection dropped before the status line"
            self.handler.abort()
            return
        content, finish = responses.transcript(words), "stop"
        cap = self.config.max_output_tokens
        if len(words) + 1 > cap:
            content, finish = " ".join(words[:cap]), "length"
        if kind == "length":
            content, finish = " ".join(words[: len(words) // 2]), "length"
        elif kind == "content_filter":
            content, finish = "", "content_filter"
        elif kind == "empty":
            content = ""
        elif kind == "tags":
            content = responses.tagged(content, request.language)
        request_id, created = uuid.uuid4().hex, int(time.time())
        call.request_id, call.content = request_id, content
        call.finish_reason, call.usage = finish, use
        args = (request_id, created, request.model, content, finish, use)
        call.ok = finish == "stop" and kind not in BROKEN  # set before the client can see it
        if kind in ("drop-body", "drop-stream"):
            call.error = "connection dropped mid-body"
        if request.stream:
            complete = self._stream(responses.sse_events(*args), kind)
        else:
            body = encode_json(responses.completion(*args))
            cut = len(body) // 2 if kind in ("drop-body", "drop-stream") else None
            complete = self._send(200, body, JSON, cut_at=cut)
        call.ok = call.ok and complete

    def _stream(self, events: list[bytes], kind: str | None) -> bool:
        """Send ``events`` as a chunked SSE response; False when the client went away."""
        handler = self.handler
        if kind == "no-done":
            events = events[:-1]
        cut = kind in ("drop-stream", "drop-body")
        if cut:
            events = events[:2]  # the role chunk and one content (or the finish) chunk
        self.call.status = 200
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-cache")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for i, event in enumerate(events):
                # Comments before the first event and after every second one: a client must
                # skip them anywhere, including between the role and content chunks.
                if self.config.sse_comments and i % 2 == 0:
                    _write_chunk(handler, KEEP_ALIVE)
                _write_chunk(handler, event)
            if cut:
                handler.abort()
                return False
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            handler.close_connection = True
            self.call.error = "client disconnected mid-stream"
            return False
        return True

    def _status_fault(self, kind: str) -> None:
        status = STATUS_FAULTS[kind]
        self.call.error = f"injected {kind}"
        if kind == "404-html":
            self._send(status, OPENRESTY_404, "text/html")
        elif kind == "500-empty":
            self._send(status, b"", JSON)
        elif kind == "400":
            self._send(status, encode_json(param_incorrect("injected fault")), JSON)
        elif kind == "429":
            self._rate_limited("injected 429")
        else:
            self._send(status, encode_json(ERROR_BODIES[kind]), JSON)

    def _rate_limited(self, why: str) -> None:
        self.call.error = f"rate limited: {why}"
        retry_after = self.config.retry_after
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        self._send(429, encode_json(ERROR_BODIES["429"]), JSON, headers)

    def _reject(self, rejection: Rejection) -> None:
        self.call.error = str(rejection)
        self._send(rejection.status, encode_json(rejection.body), JSON)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        cut_at: int | None = None,
    ) -> bool:
        self.call.status = status  # before sending: the client may look at the record at once
        sent = self.handler.send_bytes(status, body, content_type, headers or (), cut_at=cut_at)
        if not sent:
            self.call.error = "client disconnected"
        return sent and cut_at is None


def _write_chunk(handler: _Handler, data: bytes) -> None:
    """One HTTP/1.1 chunk, flushed at once so the client sees events as they are sent."""
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()
