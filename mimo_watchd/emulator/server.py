"""The MiMo ASR API emulator: a real HTTP server on loopback that every test talks to.

One request goes through the gateway's steps in this order, each able to refuse it:

1. route: ``POST {base_path}/chat/completions``; anything else is openresty's HTML 404;
2. auth (``api-key`` or ``Authorization: Bearer``; both tolerated) -> 401;
3. concurrency cap and RPM -> 429 (an admitted request counts unless it is answered 429);
4. body validation (``validation.py``) -> 400 / 404 (model) / 500 (transcription fields; a
   text part is the 400 first);
5. decoding with PyAV and recognition (``content.py``: tone words, placeholder or silence) ->
   400 when the audio does not decode, or is longer than the model's context
   (``max_prompt_tokens``);
6. TPM: the request's tokens (total or prompt, ``tpm_counts``) must fit in the window -> 429;
   they leave it again unless the call is billed;
7. fault injection (queued rules first, then the seeded random mix), latency (the model runs),
   the answer.

Every request outside the control routes, refused or faulted included, becomes a ``CallRecord``;
it is listed from the moment the request arrives and complete before the response's last byte.
With ``verbose``, each is logged as one line when it is done (``CallRecord.summary``).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from mimo_watchd.emulator import control
from mimo_watchd.emulator.faults import FaultBook, FaultRule
from mimo_watchd.emulator.limits import AccountLimits
from mimo_watchd.emulator.records import CallRecord, EmulatorConfig
from mimo_watchd.emulator.transcribe import Exchange

log = logging.getLogger("mimo_watchd.emulator")

MAX_BODY_BYTES = 32 * 1024 * 1024  # far above the 10 MB base64 limit; protects the emulator
IDLE_TIMEOUT = 120.0  # seconds before an idle keep-alive connection is closed


class Emulator:
    """A running MiMo API emulator; use as a context manager or ``start()`` / ``stop()``."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        cfg = self.config
        self.faults = FaultBook(cfg.faults, cfg.fault_rate, cfg.seed)
        self.limits = AccountLimits(
            cfg.rpm, cfg.tpm, cfg.max_concurrency, tpm_counts=cfg.tpm_counts,
            window=cfg.window_seconds,
        )
        self.stopping = threading.Event()
        self._calls: list[CallRecord] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Emulator:
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("emulator already started")
        self.stopping.clear()
        self._httpd = _Server((self.config.host, self.config.port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns within ~50 ms
            name="mimo-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, break open connections (hung requests included) and join every thread."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self.stopping.set()
        httpd.shutdown()
        httpd.close_connections(timeout=5.0)
        httpd.server_close()
        thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError("emulator not started")
        return int(self._httpd.server_address[1])

    @property
    def root(self) -> str:
        """``http://HOST:PORT`` (control endpoints live under it)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.root + self.config.base_path

    @property
    def endpoint(self) -> str:
        """The path of the one API route."""
        return self.config.base_path + "/chat/completions"

    @property
    def calls(self) -> list[CallRecord]:
        """A snapshot of every API request so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def record(self, call: CallRecord) -> None:
        """Append ``call`` (handlers call this once per request)."""
        with self._lock:
            self._calls.append(call)

    def in_flight(self) -> int:
        """API requests received whose handling has not finished (e.g. a ``hang`` in progress)."""
        with self._lock:
            return self._in_flight

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def add_fault(self, rule: FaultRule) -> None:
        """Queue a fault rule for the coming requests."""
        self.faults.add(rule)

    def reset(self) -> None:
        """Forget calls, queued faults and rate-limit windows; the random mix restarts."""
        with self._lock:
            self._calls.clear()
        self.faults.reset()
        self.limits.reset()

    def successful_calls(self) -> list[CallRecord]:
        """Calls that delivered a whole transcript (``ok``): what the client could use."""
        return [c for c in self.calls if c.ok]

    def success_counts(self) -> dict[str, int]:
        """Delivered calls per ``audio_sha256``; above 1 means a client used the audio twice."""
        return dict(Counter(c.audio_sha256 for c in self.successful_calls() if c.audio_sha256))

    def billed_calls(self) -> list[CallRecord]:
        """Calls whose model ran (``billed``), delivered or not: what the account charges."""
        return [c for c in self.calls if c.billed]

    def billed_counts(self) -> dict[str, int]:
        """Billed calls per ``audio_sha256``; above 1 means the audio was paid for twice."""
        return dict(Counter(c.audio_sha256 for c in self.billed_calls() if c.audio_sha256))

    def latency(self, seconds: float) -> float:
        """How long the answer for ``seconds`` of audio takes (0.3 s + 0.03 s/s, scaled)."""
        cfg = self.config
        return cfg.latency_scale * (cfg.latency_base + cfg.latency_per_second * seconds)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its connections, so it can stop them all promptly."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._live: dict[threading.Thread, socket.socket] = {}
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall on bad DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="mimo-emulator-conn",
            daemon=True,
        )
        with self._live_lock:
            self._live[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(threading.current_thread(), None)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection (unblocking its thread) and join the threads."""
        with self._live_lock:
            live = dict(self._live)
        for sock in live.values():
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # the client went away: normal for timeouts and dropped connections
        log.error("emulator handler failed", exc_info=exc)


class _Handler(BaseHTTPRequestHandler):
    """One connection: parses requests and hands them to ``Exchange`` or the control routes."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real gateway
    server_version = "openresty"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        if path.startswith(control.PREFIX):
            control.handle(self, emulator, path, raw)
            return
        call = CallRecord(time=time.time(), method=self.command, path=path)
        # Recorded on arrival and filled in before the last byte goes out, so a test that has
        # its response can trust ``calls[-1]`` without waiting.
        emulator.record(call)
        emulator._enter()
        try:
            Exchange(self, emulator, call).run(raw)
        finally:
            emulator._leave()
            if emulator.config.verbose:
                log.info("%s", call.summary())

    def _read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None when it cannot be read."""
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked()
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY_BYTES:
                return None
            data = self.rfile.read(length)
            return data if len(data) == length else None
        except (OSError, ValueError):
            return None

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"x", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    # -- the Connection interface of Exchange and the control routes ---------------------------

    def header(self, name: str) -> str | None:
        """A request header's value, None when absent."""
        value = self.headers.get(name)
        return None if value is None else str(value)

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        cut_at: int | None = None,
    ) -> bool:
        """Send a whole response (or, with ``cut_at``, only that many body bytes and drop the
        connection); False when the client is gone."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body if cut_at is None else body[:cut_at])
        except OSError:
            self.close_connection = True
            return False
        if cut_at is not None:
            self.abort()
        return True

    def start_stream(self, status: int, content_type: str) -> None:
        """Send the status line and headers of a chunked response (OSError: client gone)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk, flushed at once so the client sees events as they are sent."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        """The last (empty) chunk of a chunked response."""
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close the connection at once, whatever was (not) sent."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # already gone
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def peer_closed(self) -> bool:
        """Whether the client has closed its side (used while a request hangs)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
