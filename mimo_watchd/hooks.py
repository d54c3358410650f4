"""Hooks run after a file's outcome: a command (never a shell) and/or a webhook POST.

A hook can never fail the real work: ``submit`` only queues, a small pool of threads runs
the hooks, and every failure or timeout becomes a warning plus an ``on_failure`` count. Hooks
receive paths; they never get the API key and this module never touches the files.

A command runs as ``command + [outcome, audio_path, json_or_error_json_path]`` with the paths
also in ``MIMO_WATCHD_*`` variables (``paths`` key ``audio`` -> ``MIMO_WATCHD_AUDIO``, and
``json``, ``txt``, ``error_json``, ``source``; ``MIMO_WATCHD_OUTCOME`` holds the outcome).
A webhook receives the payload (the sidecar or error JSON) and is retried with backoff on
connection errors, timeouts, 429 and 5xx; each attempt may take ``timeout_seconds``.

Paths are passed with their exact bytes, also when a name is not UTF-8: as arguments and
variables as they are, in the webhook's JSON as ``\\udcXX`` escapes (``outputs.dumps``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from mimo_watchd import __version__, backoff
from mimo_watchd.config import HookSettings
from mimo_watchd.outputs import dumps

log = structlog.get_logger("mimo_watchd.hooks")

ENV_PREFIX = "MIMO_WATCHD_"
# Never handed to a hook: the key (its default variable), and systemd's per-service variables
# (a hook must not ping the watchdog or go looking for the credential).
ALWAYS_STRIPPED = frozenset({
    "MIMO_API_KEY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY",
})
OUTPUT_TAIL_BYTES = 2000


@dataclass(frozen=True)
class _Task:
    kind: str  # "command" | "webhook"
    hook: HookSettings
    outcome: str
    payload: Mapping[str, Any]
    paths: Mapping[str, str]


class HookRunner:
    """Runs hooks on ``workers`` background threads; at most ``max_pending`` wait in line.

    ``strip_env`` names more environment variables to keep from commands (the configured
    ``api.api_key_env``); ``on_failure(kind)`` is called with "command" or "webhook" for every
    hook that fails, times out or is dropped (``Metrics.observe_hook_failure`` fits).
    """

    def __init__(
        self,
        *,
        workers: int = 4,
        max_pending: int = 1000,
        strip_env: Iterable[str] = (),
        on_failure: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        self._strip = ALWAYS_STRIPPED | set(strip_env)
        self._env = env
        self._on_failure = on_failure
        self._backoff = (backoff_initial_seconds, backoff_max_seconds)
        # Unbounded so close() can always add its stop markers; submit() enforces the bound.
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._max_pending = max_pending
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._procs_lock = threading.Lock()
        self._http = httpx.Client(headers={"User-Agent": f"mimo-watchd/{__version__}"})
        self._threads = [
            threading.Thread(target=self._work, name=f"hook-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(
        self,
        hook: HookSettings,
        outcome: str,
        payload: Mapping[str, Any],
        paths: Mapping[str, str],
    ) -> bool:
        """Queues the hook's command and webhook; False when not queued (closing or full)."""
        accepted = True
        for kind, wanted in (("command", hook.command), ("webhook", hook.webhook)):
            if not wanted:
                continue
            task = _Task(kind, hook, outcome, dict(payload), dict(paths))
            if self._closing.is_set():
                self._fail(task, "hook runner is closed")
                accepted = False
                continue
            if self._queue.qsize() >= self._max_pending:
                # Blocking would stall a worker that has transcripts to deliver; a lost hook
                # is the lesser harm, and it is logged and counted.
                self._fail(task, "too many hooks waiting")
                accepted = False
                continue
            self._queue.put(task)
        return accepted

    def close(self, timeout: float | None = None) -> bool:
        """Lets queued hooks finish for up to ``timeout`` seconds, then kills what is left.

        True when everything finished in time. Safe to call twice.
        """
        self._closing.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self._threads:
            self._queue.put(None)
        finished = self._join(deadline)
        if not finished:
            self._abort.set()
            with self._procs_lock:
                for proc in self._procs:
                    if proc.returncode is None:  # never signal a reaped pid that may be reused
                        _kill_group(proc)
            # Aborted tasks end fast: backoff waits wake up, killed commands are reaped; only
            # a webhook attempt in flight may take up to its own timeout.
            self._join(None)
        self._http.close()
        return finished

    def _join(self, deadline: float | None) -> bool:
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            if self._abort.is_set():
                self._fail(task, "abandoned at shutdown")
                continue
            started = time.monotonic()
            try:
                error = self._run_command(task) if task.kind == "command" else self._post(task)
            except Exception as exc:  # a bug in a hook must not kill the pool
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                log.info("hook.ran", hook=task.kind, outcome=task.outcome,
                         audio=task.paths.get("audio"),
                         seconds=round(time.monotonic() - started, 3))
            else:
                self._fail(task, error)

    def _fail(self, task: _Task, reason: str) -> None:
        log.warning("hook.failed", hook=task.kind, outcome=task.outcome,
                    audio=task.paths.get("audio"), reason=reason)
        if self._on_failure is not None:
            try:
                self._on_failure(task.kind)
            except Exception:
                log.exception("hook.callback_error")

    def _command_env(self, outcome: str, paths: Mapping[str, str]) -> dict[str, str]:
        """The environment a command gets: ours minus secrets, plus ``MIMO_WATCHD_*``."""
        base = os.environ if self._env is None else self._env
        env = {k: v for k, v in base.items()
               # Inherited MIMO_WATCHD_* would pose as paths of this file.
               if k not in self._strip and not k.startswith(ENV_PREFIX)}
        env[ENV_PREFIX + "OUTCOME"] = outcome
        for key, value in paths.items():
            env[ENV_PREFIX + key.upper()] = value
        return env

    def _run_command(self, task: _Task) -> str | None:
        assert task.hook.command is not None
        p = task.paths
        argv = [*task.hook.command, task.outcome, p.get("audio", ""),
                p.get("json") or p.get("error_json") or ""]
        with tempfile.TemporaryFile() as out:
            # Output goes to a file: a pipe could fill and block the hook, and a chatty hook
            # must not grow our memory. Its own session lets us kill it with its children.
            try:
                proc = subprocess.Popen(
                    argv, env=self._command_env(task.outcome, p), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                return f"cannot run {argv[0]}: {exc.strerror or exc}"
            with self._procs_lock:
                if self._abort.is_set():  # close() gave up while this one was starting
                    _kill_group(proc)
                self._procs.add(proc)
            try:
                proc.wait(task.hook.timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                return f"timed out after {task.hook.timeout_seconds:g} s; killed"
            finally:
                with self._procs_lock:
                    self._procs.discard(proc)
            if self._abort.is_set() and proc.returncode < 0:
                return "killed at shutdown"
            if proc.returncode != 0:
                return f"exit status {proc.returncode}; output: {_tail(out)!r}"
        return None

    def _post(self, task: _Task) -> str | None:
        assert task.hook.webhook is not None
        url = task.hook.webhook
        body = dumps(task.payload, indent=None).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "X-Mimo-Watchd-Outcome": task.outcome,
            # The same id on every attempt lets a receiver drop a repeat delivery.
            "X-Mimo-Watchd-Delivery": uuid.uuid4().hex,
        }
        initial, cap = self._backoff
        error = ""
        for attempt in range(task.hook.retries + 1):
            if attempt and self._abort.wait(backoff.delay(attempt, initial=initial, cap=cap)):
                return f"abandoned at shutdown after: {error}"
            try:
                response = self._http.post(url, content=body, headers=headers,
                                           timeout=task.hook.timeout_seconds)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return None
            error = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break  # the receiver refused this delivery; repeating it will not help
        # The URL may carry a token (chat webhooks do): name only its host.
        where = urlsplit(url).netloc.rpartition("@")[2]
        return f"POST to {where}: {error.replace(url, where)} (attempts: {attempt + 1})"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone with all its children
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(f: Any) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - OUTPUT_TAIL_BYTES))
    data: bytes = f.read()
    return data.decode("utf-8", "replace").strip()
