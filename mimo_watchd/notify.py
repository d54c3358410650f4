"""systemd readiness and watchdog notifications (sd_notify) without libsystemd.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``). Outside systemd
the variable is unset and every call is a no-op, so the daemon never needs to ask.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("mimo_watchd.notify")

# A notification must never stall the daemon; systemd reads its socket promptly, so a send
# that cannot complete in this time means something is wrong with systemd, not with us.
SEND_TIMEOUT_SECONDS = 2.0

# A health check: True/False, or (ok, reason) so the reason can be logged and served.
Health = Callable[[], bool | tuple[bool, str]]


class Notifier:
    """Sends state changes to systemd; disabled (every call a no-op) without ``$NOTIFY_SOCKET``."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # vsock: and other transports of newer systemd are not spoken here.
            log.warning("notify.unsupported_socket", address=address)
            address = None
        return cls(
            address,
            watchdog_usec=_positive_int(env.get("WATCHDOG_USEC")),
            watchdog_pid=_positive_int(env.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured (the daemon runs under systemd)."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """Sets the one-line status shown by ``systemctl status``."""
        return self.notify(*_status(text))

    def reloading(self) -> bool:
        """A reload has begun; send ``ready()`` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """The keep-alive ping; send it more often than ``watchdog_interval()``."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Asks systemd to wait ``seconds`` more for the current start, reload or stop."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd expects a ping, or None when no watchdog applies to us."""
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None  # the watchdog is meant for another process (e.g. our parent)
        return self._watchdog_usec / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Sends ``KEY=VALUE`` assignments in one datagram; True when delivered, never raises."""
        if self._address is None:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(SEND_TIMEOUT_SECONDS)
                self._sock.sendto(data, self._address)
        except OSError as exc:
            # Logged once per run of failures: a gone socket must not flood the journal
            # every watchdog interval.
            if not self._failing:
                self._failing = True
                log.warning("notify.send_failed", error=str(exc), message=assignments[0])
            return False
        if self._failing:
            self._failing = False
            log.info("notify.recovered")
        return True

    def close(self) -> None:
        """Closes the socket; a later notification opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class WatchdogPinger:
    """A thread that pings the systemd watchdog every interval/2, but only while healthy.

    ``healthy()`` returns a bool or ``(ok, reason)`` (the same callable as the health endpoint).
    When it says no, or raises, the pings stop, so systemd kills and restarts a daemon whose
    worker hung or whose observer died. Without a watchdog (``interval`` None) it does nothing.
    """

    def __init__(
        self, notifier: Notifier, healthy: Health, *, interval: float | None = None
    ) -> None:
        self._notifier = notifier
        self._healthy = healthy
        watchdog = notifier.watchdog_interval()
        self.period = interval if interval is not None else (
            watchdog / 2 if watchdog is not None else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._withheld = False

    def start(self) -> None:
        """Starts pinging (the first ping is immediate); a no-op without a watchdog."""
        if self.period is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog-pinger", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stops the thread and waits for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> WatchdogPinger:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self.period is not None
        while True:
            self.ping_once()
            if self._stop.wait(self.period):
                return

    def ping_once(self) -> bool:
        """Checks health and pings if healthy; True when a ping was sent."""
        ok, reason = evaluate_health(self._healthy)
        if not ok:
            if not self._withheld:
                self._withheld = True
                log.warning("watchdog.withheld", reason=reason)
            return False
        if self._withheld:
            self._withheld = False
            log.info("watchdog.resumed")
        return self._notifier.watchdog()


def evaluate_health(healthy: Health) -> tuple[bool, str]:
    """Runs a health check; ``(ok, reason)``, where a check that raises counts as unhealthy."""
    try:
        result = healthy()
    except Exception as exc:  # a broken check must read as unhealthy, not kill its caller
        return False, f"health check raised {type(exc).__name__}: {exc}"
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1])
    return bool(result), "" if result else "health check returned false"


def _socket_address(address: str) -> str:
    # Python spells an abstract socket name with a leading NUL byte; systemd with '@'.
    return "\0" + address[1:] if address.startswith("@") else address


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # A newline would end the STATUS value and start a new assignment (file names may hold one).
    return ("STATUS=" + " ".join(text.splitlines()),)


def _positive_int(raw: str | None) -> int | None:
    try:
        value = int(raw) if raw else 0
    except ValueError:
        return None
    return value if value > 0 else None
