"""Messages that carry the transcript, sent through Apprise (mail, ntfy, Matrix, Telegram, ...).

Not to be confused with ``notify`` (systemd's sd_notify). A watch's ``notify`` section names
Apprise URLs, when to send (``success``, ``failure``) and a title and body template
(``templates``): the body gets the transcript, cut to ``max_chars``, the file's name, the
duration and the cost. Like the hooks, a message can never cost a transcript: ``submit`` is
called after the outputs are in place and only queues; background threads send, each URL on
its own, retried with backoff; a failure is a warning and a count
(``Metrics.observe_message``), never an error of the job.

The URLs hold tokens and passwords: every part of them that could be one is registered as a
secret when the config is read (``config.loader``; ``redact`` scrubs every log line), log
lines name a URL only by its place in the list and its scheme, and Apprise's own log records
(which may hold a URL) go to no handler but the per-send capture a failure's reason is read
from, redacted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from mimo_watchd import backoff, notifyurls, templates
from mimo_watchd.billing import duration_text
from mimo_watchd.config import NotifySettings, redact
from mimo_watchd.records import Failed, Record, Transcribed

log = structlog.get_logger("mimo_watchd.messaging")

CUT_MARK = "..."
_REASON_CHARS = 300


@dataclass(frozen=True)
class Message:
    """One message for one file: its title and body, and where it goes."""

    notify: NotifySettings
    outcome: str
    audio: str
    title: str
    body: str


def when(record: Record) -> str | None:
    """The ``on`` value a record's outcome answers to (None: no message is due)."""
    if isinstance(record, Failed):
        return "failure"
    if isinstance(record, Transcribed):
        return "success"
    return None  # a duplicate skipped without outputs: no transcript to carry


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (whole characters), marked when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(CUT_MARK))].rstrip() + CUT_MARK


def fields(record: Transcribed | Failed, notify: NotifySettings, watch: str) -> dict[str, str]:
    """The values of a message template for ``record`` (text, empty where it does not apply)."""
    if isinstance(record, Failed):
        return {"name": _name(record.path), "path": record.path,
                "original_path": record.original_path, "watch": watch, "outcome": "failed",
                "transcript": "", "reason": record.reason, "duration": "", "cost": "",
                "language": "",
                "summary": f"failed after {record.attempts} attempt(s) ({record.error})"}
    cost = record.cost.text() if record.cost is not None else ""
    duration = duration_text(record.source.duration_seconds)
    return {"name": _name(record.source.path), "path": record.source.path,
            "original_path": record.source.original_path, "watch": watch,
            "outcome": record.outcome, "transcript": cut(record.text, notify.max_chars),
            "reason": "", "duration": duration, "cost": cost, "language": record.language,
            "summary": f"{duration} of audio" + (f", {cost}" if cost else "")}


def _name(path: str) -> str:
    return path.rpartition("/")[2]


def message(notify: NotifySettings, record: Record, watch: str) -> Message | None:
    """The message ``notify`` asks for after ``record``, or None when none is due."""
    due = when(record)
    if due is None or due not in notify.on:
        return None
    assert isinstance(record, Transcribed | Failed)
    values = fields(record, notify, watch)
    return Message(notify=notify, outcome=values["outcome"], audio=values["path"],
                   title=templates.render_message(notify.title, values),
                   body=templates.render_message(notify.body, values))


class _Capture(logging.Handler):
    """Apprise's log records of one thread (one send), for a failure's reason."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


class Messenger:
    """Sends messages on ``workers`` background threads; at most ``max_pending`` wait.

    ``on_sent(ok)`` is called once per URL and message: True when delivered, False when every
    attempt failed or it was dropped (``Metrics.observe_message`` fits).
    """

    def __init__(self, *, workers: int = 2, max_pending: int = 1000,
                 on_sent: Callable[[bool], None] | None = None,
                 backoff_initial_seconds: float = 1.0, backoff_max_seconds: float = 30.0) -> None:
        self._on_sent = on_sent
        self._backoff = (backoff_initial_seconds, backoff_max_seconds)
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._max_pending = max_pending
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"message-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, notify: NotifySettings, record: Record, watch: str) -> bool:
        """Queues the message ``notify`` asks for after ``record``, if one is due; never
        blocks or raises. False when one was due but could not be queued."""
        try:
            msg = message(notify, record, watch)
        except Exception as exc:  # a template the checks let through must not fail the job
            log.warning("message.failed", reason=f"cannot render: {type(exc).__name__}: {exc}")
            self._count(False, len(notify.urls))
            return False
        if msg is None:
            return True
        if self._closing.is_set() or self._queue.qsize() >= self._max_pending:
            log.warning("message.failed", outcome=msg.outcome, audio=msg.audio,
                        reason="closing" if self._closing.is_set() else "too many waiting")
            self._count(False, len(notify.urls))
            return False
        self._queue.put(msg)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Lets queued messages go for up to ``timeout`` seconds, then abandons the rest (each
        counted as failed). True when everything was sent in time; safe to call twice."""
        self._closing.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finished = not any(t.is_alive() for t in self._threads)
        if not finished:
            self._abort.set()  # backoff waits end; an attempt in flight ends by its timeout
        return finished

    def _count(self, ok: bool, times: int = 1) -> None:
        if self._on_sent is None:
            return
        for _ in range(times):
            try:
                self._on_sent(ok)
            except Exception:
                log.exception("message.callback_error")

    def _work(self) -> None:
        while (msg := self._queue.get()) is not None:
            for index, url in enumerate(msg.notify.urls):
                where = f"urls[{index}] ({notifyurls.describe(url)})"
                if self._abort.is_set():
                    error: str | None = "abandoned at shutdown"
                else:
                    try:
                        error = self._send(msg, url)
                    except Exception as exc:  # a bug in a plugin must not kill the thread
                        error = f"{type(exc).__name__}: {exc}"
                if error is None:
                    log.info("message.sent", to=where, outcome=msg.outcome, audio=msg.audio)
                else:
                    log.warning("message.failed", to=where, outcome=msg.outcome,
                                audio=msg.audio, reason=redact(error))
                self._count(error is None)

    def _send(self, msg: Message, url: str) -> str | None:
        """Delivers ``msg`` to ``url`` with retries; None when delivered, else why not."""
        apprise = notifyurls.load()
        sender = apprise.Apprise()
        if not sender.add(url):
            return "Apprise does not understand this URL"
        initial, cap = self._backoff
        error = ""
        attempts = msg.notify.retries + 1
        for attempt in range(attempts):
            if attempt and self._abort.wait(backoff.delay(attempt, initial=initial, cap=cap)):
                return f"abandoned at shutdown after: {error}"
            capture = _Capture()
            apprise_log = logging.getLogger("apprise")
            apprise_log.addHandler(capture)
            try:
                if sender.notify(body=msg.body, title=msg.title,
                                 body_format=apprise.NotifyFormat.TEXT):
                    return None
            finally:
                apprise_log.removeHandler(capture)
            error = (capture.lines[-1] if capture.lines else "delivery failed")[:_REASON_CHARS]
        return f"{error} (attempts: {attempts})"
