"""A tiny local HTTP server that answers ``POST /v1/chat/completions`` with scripted bodies,
for behaviour the emulator should not pretend to have (a gateway that echoes the key it got).

Each answer is a status and a body template; ``{key}`` in the template becomes the key the
request carried (``api-key`` or ``Authorization: Bearer``). The last answer is repeated.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    """One scripted answer: ``status`` with ``body`` (a JSON-able template, ``{key}`` in any
    string filled in)."""

    status: int
    body: Any


def _fill(value: Any, key: str) -> Any:
    if isinstance(value, str):
        return value.replace("{key}", key)
    if isinstance(value, dict):
        return {k: _fill(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, key) for v in value]
    return value


class ReplayServer:
    """The server: ``url`` (ending in /v1), ``requests`` (keys received, in order), and
    ``script`` (answers still to give; replace it to change what comes next)."""

    def __init__(self, script: list[Answer]) -> None:
        self.script = list(script)
        self.keys: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                auth = self.headers.get("Authorization", "")
                key = self.headers.get("api-key") or auth.removeprefix("Bearer ").strip()
                answer = outer.next_answer(key)
                data = json.dumps(_fill(answer.body, key)).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read ``keys`` instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def next_answer(self, key: str) -> Answer:
        with self._lock:
            self.keys.append(key)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def answer_with(self, script: list[Answer]) -> None:
        """From now on, answer with ``script``."""
        with self._lock:
            self.script = list(script)


@contextmanager
def replay(script: list[Answer]) -> Iterator[ReplayServer]:
    """A running ``ReplayServer``, shut down afterwards."""
    server = ReplayServer(script)
    server._thread.start()
    try:
        yield server
    finally:
        server._server.shutdown()
        server._server.server_close()
