"""Prometheus metrics and the /metrics + /healthz HTTP endpoint.

``Metrics`` owns its own registry (tests and several daemons in one process never collide);
the daemon calls its ``observe_*``/``set_*`` methods, ``serve`` exposes it over HTTP.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from mimo_watchd import __version__
from mimo_watchd.config import parse_listen
from mimo_watchd.notify import Health, evaluate_health

log = structlog.get_logger("mimo_watchd.metrics")

NAMESPACE = "mimo_watchd"
OUTCOMES = ("done", "failed", "duplicate", "skipped")
TOKEN_KINDS = ("prompt", "completion", "audio")
HOOK_KINDS = ("command", "webhook")
MESSAGE_RESULTS = ("sent", "failed")
PRUNED_KINDS = ("audio", "sidecar")
# A voicemail takes seconds, a long recording split into chunks many minutes.
PROCESSING_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class Metrics:
    """Every metric of the daemon, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Memory, open files and start time: what shows a leak in a daemon that runs for months.
        ProcessCollector(registry=self.registry)
        r, ns = self.registry, NAMESPACE
        self.info = Gauge("build_info", "Always 1; the version as a label",
                          ["version"], namespace=ns, registry=r)
        self.info.labels(__version__).set(1)
        self.files = Counter("files", "Files finished, by outcome",
                             ["outcome"], namespace=ns, registry=r)
        self.api_requests = Counter(
            "api_requests", "API requests answered, by HTTP status ('error' when none arrived)",
            ["status"], namespace=ns, registry=r)
        self.api_retries = Counter("api_retries", "API requests that were retries",
                                   namespace=ns, registry=r)
        self.billed_seconds = Counter(
            "billed_seconds", "Audio seconds billed (usage.seconds of paid responses)",
            namespace=ns, registry=r)
        self.cost = Counter("cost", "What paid responses cost at api.price_per_hour, by currency",
                            ["currency"], namespace=ns, registry=r)
        self.billed_unknown = Counter(
            "billed_unknown_responses", "Paid responses that did not say what they billed "
            "(their cost is missing from cost_total)", namespace=ns, registry=r)
        self.messages = Counter("messages", "Notification deliveries (one per URL and file), "
                                "by result", ["result"], namespace=ns, registry=r)
        self.pruned = Counter("pruned_files", "Files deleted by retention, by kind (audio, "
                              "sidecar)", ["kind"], namespace=ns, registry=r)
        self.tokens = Counter("tokens", "Tokens reported by paid responses, by kind",
                              ["kind"], namespace=ns, registry=r)
        self.queue_depth = Gauge("queue_depth", "Jobs queued (including retries not yet due)",
                                 namespace=ns, registry=r)
        self.in_progress = Gauge("in_progress", "Jobs being processed now",
                                 namespace=ns, registry=r)
        self.paused = Gauge("paused", "1 while work is paused (key, balance, the API unreachable, "
                            "the state folder full)",
                            namespace=ns, registry=r)
        self.processing_seconds = Histogram(
            "processing_seconds", "Time from claiming a file to its outcome",
            namespace=ns, registry=r, buckets=PROCESSING_BUCKETS)
        self.last_success = Gauge("last_success_timestamp_seconds",
                                  "Unix time of the last file transcribed",
                                  namespace=ns, registry=r)
        self.hook_failures = Counter("hook_failures", "Hooks that failed or timed out, by kind",
                                     ["hook"], namespace=ns, registry=r)
        self.ignored = Counter("files_ignored", "Files seen in a watch that its name rules do "
                               "not take (each path once), by reason",
                               ["reason"], namespace=ns, registry=r)
        # Series that exist from the start read as 0 rather than absent, so rate() and alerts
        # on them work before the first event.
        for outcome in OUTCOMES:
            self.files.labels(outcome)
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)
        for hook in HOOK_KINDS:
            self.hook_failures.labels(hook)
        for result in MESSAGE_RESULTS:
            self.messages.labels(result)
        for kind in PRUNED_KINDS:
            self.pruned.labels(kind)

    def observe_job(self, outcome: str, seconds: float | None = None) -> None:
        """A file reached an outcome (done, failed, duplicate, skipped) after ``seconds``."""
        self.files.labels(outcome).inc()
        if seconds is not None:
            self.processing_seconds.observe(seconds)
        if outcome == "done":
            self.last_success.set(time.time())

    def observe_api(
        self, status: int | str, usage: Mapping[str, Any] | None = None, *, retry: bool = False
    ) -> None:
        """An API request ended with HTTP ``status`` (or "error"/"timeout" when none arrived).

        ``usage`` is the response's usage object; it is counted here, per response, because
        that is when money is spent, even if the file fails later. ``retry`` marks a repeat.
        """
        self.api_requests.labels(str(status)).inc()
        if retry:
            self.api_retries.inc()
        if usage:
            _inc(self.billed_seconds, usage.get("seconds"))
            _inc(self.tokens.labels("prompt"), usage.get("prompt_tokens"))
            _inc(self.tokens.labels("completion"), usage.get("completion_tokens"))
            _inc(self.tokens.labels("audio"), _audio_tokens(usage))

    def observe_cost(self, usage: Mapping[str, Any] | None, price_per_hour: float,
                     currency: str) -> None:
        """A paid response's cost (``usage.seconds`` at ``price_per_hour``); one that does not
        say what it billed is counted as such, never guessed."""
        seconds = usage.get("seconds") if isinstance(usage, Mapping) else None
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            _inc(self.cost.labels(currency), seconds * price_per_hour / 3600)
        else:
            self.billed_unknown.inc()

    def observe_message(self, sent: bool) -> None:
        """A notification to one URL was delivered, or failed for good; fits
        ``Messenger(on_sent=)``."""
        self.messages.labels("sent" if sent else "failed").inc()

    def observe_pruned(self, kind: str) -> None:
        """Retention deleted a file ("audio" or "sidecar")."""
        self.pruned.labels(kind).inc()

    def set_queue(self, queued: int, in_progress: int) -> None:
        """The current number of queued and in-progress jobs."""
        self.queue_depth.set(queued)
        self.in_progress.set(in_progress)

    def set_paused(self, paused: bool) -> None:
        """Whether API work is paused (bad key, no balance, ...)."""
        self.paused.set(1 if paused else 0)

    def observe_ignored(self, reason: str) -> None:
        """A file appeared that the watch's name rules do not take (see ``ignore_reason``)."""
        self.ignored.labels(reason).inc()

    def observe_hook_failure(self, hook: str) -> None:
        """A hook ("command" or "webhook") failed or timed out; fits ``HookRunner(on_failure=)``."""
        self.hook_failures.labels(hook).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _audio_tokens(usage: Mapping[str, Any]) -> Any:
    # The API nests them in prompt_tokens_details; the sidecar JSON has them at the top.
    if "audio_tokens" in usage:
        return usage["audio_tokens"]
    details = usage.get("prompt_tokens_details")
    return details.get("audio_tokens") if isinstance(details, Mapping) else None


def _inc(counter: Any, value: Any) -> None:
    # Usage comes from a remote JSON document: ignore what is not a positive number rather
    # than let a counter raise into the worker.
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        counter.inc(value)


class MetricsServer:
    """The HTTP server of ``serve``, running in a background thread."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        # A short poll interval makes stop() (and so daemon shutdown) prompt.
        self._thread = threading.Thread(target=server.serve_forever, name="metrics-http",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stops serving, closes the socket and joins the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(listen: str, metrics: Metrics, health: Health) -> MetricsServer:
    """Serves GET /metrics and GET /healthz on ``listen`` in a background thread.

    /healthz answers 200 "ok" while ``health()`` is true, else 503 with the reason. Raises
    ConfigError for a malformed address and OSError when it cannot bind.
    """
    host, port = parse_listen(listen)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = _ServerV6 if family == socket.AF_INET6 else _Server
    server = server_class((host, port), _Handler)
    server.metrics, server.health = metrics, health
    log.info("metrics.listening", host=host, port=server.server_address[1])
    return MetricsServer(server)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck scraper must not hold up stop()
    metrics: Metrics
    health: Health


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds; a client that connects and says nothing must not pin a thread
    server_version = f"mimo-watchd/{__version__}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = evaluate_health(self.server.health)
            body = "ok\n" if ok else (reason or "unhealthy") + "\n"
            self._send(200 if ok else 503, body.encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found; try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every 15 s would drown the journal; keep them at debug level.
        log.debug("metrics.request", client=self.client_address[0], line=format % args)
