"""Real local receivers for notifications: an HTTP server for Apprise's ``json://`` and an SMTP
sink (aiosmtpd) for ``mailto://``, both on 127.0.0.1 at a free port."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonReceiver:
    """Records each JSON POST; answers ``status`` (a list: the next answers, then 200)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = outer.answers.pop(0) if outer.answers else 200
                if code == 200:
                    outer.received.append({"path": self.path, **json.loads(body)})
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def url(self, path: str = "/mimo", auth: str = "") -> str:
        return f"json://{auth}127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it is given."""

    def __init__(self) -> None:
        from email import message_from_bytes, policy

        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return (f"mailto://127.0.0.1:{self.port}?from=mimo@example.com&to=me@example.com"
                "&mode=insecure")

    def close(self) -> None:
        self.controller.stop()
