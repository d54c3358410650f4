"""One API request through the gateway's steps: auth, limits, validation, decoding, faults,
latency and the answer (see the order in ``server.py``)."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from mimo_watchd.emulator import content, responses
from mimo_watchd.emulator.faults import (
    ERROR_BODIES,
    OK_ERROR_FAULTS,
    OPENRESTY_404,
    STATUS_FAULTS,
    FaultRule,
    encode_json,
    param_incorrect,
)
from mimo_watchd.emulator.limits import Entry
from mimo_watchd.emulator.records import CallRecord, Connection, Host
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

JSON = "application/json"
SSE = "text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"
# 200 status, but the answer does not reach the client in the documented shape.
BROKEN = ("drop-body", "drop-stream")


class Exchange:
    """The emulator's side of one API request; fills in its ``CallRecord`` as it goes."""

    def __init__(self, conn: Connection, host: Host, call: CallRecord) -> None:
        self.conn = conn
        self.host = host
        self.config = host.config
        self.call = call
        self._admission: Entry | None = None  # this request in the RPM window
        self._charge: Entry | None = None  # its tokens in the TPM window
        self._in_flight = False  # counted against the concurrency cap

    def run(self, raw: bytes) -> None:
        """Answer the request whose body is ``raw``."""
        conn, call = self.conn, self.call
        if conn.command != "POST" or call.path != self.host.endpoint:
            call.error = "no such route"
            self._send(404, OPENRESTY_404, "text/html")
            return
        call.auth_style, keys = auth_style(conn.header("api-key"), conn.header("Authorization"))
        call.key_ok = check_key(keys, self.config.api_keys, either=self.config.accept_either_key)
        if not call.key_ok:
            self._reject(unauthorized())
            return
        self._admission = self.host.limits.enter()
        if self._admission is None:
            self._rate_limited("RPM or concurrency cap")
            return
        self._in_flight = True
        try:
            self._admitted(raw)
        finally:
            if not call.billed:
                self._refund()
            self._done()

    def _done(self) -> None:
        """The request no longer counts as in flight: called before its answer's first byte,
        so a client that has the answer can send its next request within the cap."""
        if self._in_flight:
            self._in_flight = False
            self.host.limits.leave()

    def _admitted(self, raw: bytes) -> None:
        call, config = self.call, self.config
        try:
            body = parse_body(raw, self.conn.header("Content-Type"))
            call.body = redact(body)
            call.stream = body.get("stream") is True
            request = validate(body, model=config.model, max_b64_chars=config.max_b64_chars)
            call.language, call.mime = request.language, request.mime
            call.audio_sha256 = hashlib.sha256(request.audio).hexdigest()
            heard = content.hear(request)
        except Rejection as rejection:
            self._reject(rejection)
            return
        call.duration, call.words = heard.seconds, heard.words
        text, finish, use = content.answer(heard, config)
        context = config.max_prompt_tokens
        if context is not None and use["prompt_tokens"] > context:
            self._reject(
                bad(f"audio too long: {use['prompt_tokens']} prompt tokens exceed {context}")
            )
            return
        assert self._admission is not None  # run() admitted the request before this
        self._charge = self.host.limits.charge(use, self._admission)
        if self._charge is None:
            self._rate_limited("TPM")
            return
        fault = self.host.faults.draw(heard.words)
        call.fault = fault.kind if fault else None
        if self._wait_for_the_model(heard.seconds, fault):
            self._answer(request, heard.seconds, text, finish, use, call.fault)

    def _wait_for_the_model(self, seconds: float, fault: FaultRule | None) -> bool:
        """Sleep the latency (plus a slow fault's pause); False when the emulator stopped."""
        delay = self.host.latency(seconds)
        if fault is not None and fault.kind == "slow":
            delay += fault.delay or self.config.slow_seconds
        stopping = self.host.stopping
        if stopping.wait(delay) if delay > 0 else stopping.is_set():
            self.call.error = "emulator stopped"
            self.conn.abort()
            return False
        return True

    def _answer(self, request: AudioRequest, seconds: float, text: str, finish: str,
                use: dict[str, Any], kind: str | None) -> None:
        call = self.call
        if kind in STATUS_FAULTS or kind in OK_ERROR_FAULTS or kind == "hang":
            self._refund()
        if kind in STATUS_FAULTS:
            self._status_fault(str(kind))
            return
        if kind in OK_ERROR_FAULTS:
            self._error_inside_200(str(kind), request.stream)
            return
        if kind == "hang":
            call.error = "hung until the client left or the emulator stopped"
            while not self.host.stopping.wait(0.05) and not self.conn.peer_closed():
                pass
            self.conn.abort()
            return
        call.billed = True  # the model ran: from here on the account charges the call
        if self.conn.peer_closed():
            # The client timed out meanwhile: nobody reads this answer, so it is billed but
            # never ``ok`` (delivered).
            call.error = "client gone before the answer"
            self.conn.abort()
            return
        if kind == "drop-headers":
            call.error = "connection dropped before the status line"
            self.conn.abort()
            return
        answer, finish = _faulted_text(text, finish, kind, request.language)
        sent = _faulted_usage(use, seconds, kind)
        request_id, created = uuid.uuid4().hex, int(time.time())
        call.request_id, call.content = request_id, answer
        call.finish_reason, call.usage = finish, sent
        args = (request_id, created, request.model, answer, finish, sent)
        broken = kind in BROKEN or (kind == "no-done" and request.stream)
        call.ok = finish == "stop" and not broken  # set before the client can see it
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
        """Send ``events`` as a chunked SSE response; False when it was cut or the client left."""
        conn = self.conn
        if kind == "no-done":
            events = events[:-1]
        cut = kind in ("drop-stream", "drop-body")
        if cut:
            events = events[:2]  # the role chunk and one content (or the finish) chunk
        self.call.status = 200
        self._done()
        try:
            conn.start_stream(200, SSE)
            for i, event in enumerate(events):
                # Comments before the first event and after every second one: a client must
                # skip them anywhere, including between the role and content chunks.
                if self.config.sse_comments and i % 2 == 0:
                    conn.write_chunk(KEEP_ALIVE)
                conn.write_chunk(event)
            if cut:
                conn.abort()
                return False
            conn.end_stream()
        except OSError:
            conn.abort()
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

    def _error_inside_200(self, kind: str, stream: bool) -> None:
        """HTTP 200 carrying an error body (a stream: as its only event, no ``[DONE]``)."""
        code = OK_ERROR_FAULTS[kind]
        self.call.error = f"injected {kind}"
        if code == "429":
            self._withdraw_admission()  # a 429 is a 429, whatever the status line says
        body = ERROR_BODIES[code]
        if stream:
            self._stream([responses.error_event(body)], None)
        else:
            self._send(200, encode_json(body), JSON)

    def _rate_limited(self, why: str) -> None:
        self.call.error = f"rate limited: {why}"
        self._withdraw_admission()
        self._refund()
        retry_after = self.config.retry_after
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        self._send(429, encode_json(ERROR_BODIES["429"]), JSON, headers)

    def _refund(self) -> None:
        """Take this request's tokens out of the TPM window: the account charges only what it
        bills. Done before an unbilled answer is sent, so a client sees the window as it is."""
        if self._charge is not None:
            self.host.limits.withdraw(self._charge)
            self._charge = None

    def _withdraw_admission(self) -> None:
        """A request answered 429 leaves no trace in the RPM window (see ``limits``)."""
        if self._admission is not None:
            self.host.limits.withdraw(self._admission)

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
        self._done()
        sent = self.conn.send_bytes(status, body, content_type, headers or (), cut_at=cut_at)
        if not sent:
            self.call.error = "client disconnected"
        return sent and cut_at is None


def _faulted_text(text: str, finish: str, kind: str | None, language: str) -> tuple[str, str]:
    """The content and finish_reason a content fault makes of the model's answer."""
    if kind == "length":
        return content.truncated(text, 0.5), "length"
    if kind == "content_filter":
        return "", "content_filter"
    if kind == "empty":
        return "", finish
    if kind == "tags":
        return responses.tagged(text, language), finish
    if kind == "looping":
        return content.looping(text), finish
    if kind == "repetition_truncation":
        return content.looping(text), "repetition_truncation"
    return text, finish


def _faulted_usage(use: dict[str, Any], seconds: float, kind: str | None) -> dict[str, Any] | None:
    """The ``usage`` a usage fault sends instead of the documented one."""
    if kind == "no-usage":
        return None
    if kind == "no-seconds":
        return {k: v for k, v in use.items() if k != "seconds"}
    if kind == "float-seconds":
        return {**use, "seconds": round(seconds, 1)}
    return use
