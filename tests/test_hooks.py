"""Command and webhook hooks run for real: processes, a local HTTP receiver, timeouts, retries."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mimo_watchd.config import HookSettings
from mimo_watchd.hooks import HookRunner
from tests.support import wait_for

# Writes what the hook received (argv after the output path, and the environment) as JSON.
RECORD = ("import json, os, sys\n"
          "json.dump({'argv': sys.argv[2:], 'env': dict(os.environ)}, open(sys.argv[1], 'w'))\n")
PAYLOAD = {"schema": "mimo-watchd/transcript@1", "transcript": "你好 world",
           "usage": {"seconds": 4}}


def command(*argv: str, timeout: float = 10.0) -> HookSettings:
    return HookSettings(command=argv, webhook=None, timeout_seconds=timeout, retries=0)


def webhook(url: str, *, retries: int = 0, timeout: float = 5.0) -> HookSettings:
    return HookSettings(command=None, webhook=url, timeout_seconds=timeout, retries=retries)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Receiver:
    """A local webhook endpoint answering with scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                receiver.release.wait(10)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


class Failures(list[str]):
    """Collects the on_failure callbacks, with an event per call."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def __call__(self, kind: str) -> None:
        self.append(kind)
        self.event.set()


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
def make_runner(failures: Failures) -> Iterator[Callable[..., HookRunner]]:
    runners: list[HookRunner] = []

    def make(**kw: Any) -> HookRunner:
        kw.setdefault("on_failure", failures)
        kw.setdefault("backoff_initial_seconds", 0.02)
        runner = HookRunner(**kw)
        runners.append(runner)
        return runner

    yield make
    for r in runners:
        r.close(1)


def test_command_gets_paths_as_args_and_env(
    tmp_path: Path, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A command gets outcome and paths as arguments and MIMO_WATCHD_*; no secret, no shell."""
    out = tmp_path / "record.json"
    env = {**os.environ, "MIMO_API_KEY": "sk-default", "ACME_KEY": "sk-configured",
           "NOTIFY_SOCKET": "/run/systemd/notify", "MIMO_WATCHD_ERROR_JSON": "/stale",
           "KEEP_ME": "yes"}
    runner = make_runner(env=env, strip_env={"ACME_KEY"})
    audio = str(tmp_path / "call; $(touch pwned) `id`.m4a")
    paths = {"audio": audio, "json": audio + ".json", "txt": audio + ".txt",
             "source": "/inbox/call.m4a"}
    assert runner.submit(command(sys.executable, "-c", RECORD, str(out)), "done", PAYLOAD, paths)
    assert runner.close(10)
    got = json.loads(out.read_text())
    assert got["argv"] == ["done", audio, audio + ".json"]
    hook_env = got["env"]
    assert hook_env["MIMO_WATCHD_OUTCOME"] == "done"
    assert hook_env["MIMO_WATCHD_AUDIO"] == audio
    assert hook_env["MIMO_WATCHD_JSON"] == audio + ".json"
    assert hook_env["MIMO_WATCHD_TXT"] == audio + ".txt"
    assert hook_env["MIMO_WATCHD_SOURCE"] == "/inbox/call.m4a"
    assert hook_env["KEEP_ME"] == "yes"
    for absent in ("MIMO_API_KEY", "ACME_KEY", "NOTIFY_SOCKET", "MIMO_WATCHD_ERROR_JSON"):
        assert absent not in hook_env
    assert not list(tmp_path.glob("pwned*")) and not Path("pwned").exists()
    assert failures == []


def test_failure_hook_gets_the_error_json(
    tmp_path: Path, make_runner: Callable[..., HookRunner]
) -> None:
    """For a failed file the third argument and MIMO_WATCHD_ERROR_JSON name the error file."""
    out = tmp_path / "record.json"
    runner = make_runner()
    paths = {"audio": "/failed/a.wav", "error_json": "/failed/a.error.json"}
    runner.submit(command(sys.executable, "-c", RECORD, str(out)), "failed", {}, paths)
    runner.close(10)
    got = json.loads(out.read_text())
    assert got["argv"] == ["failed", "/failed/a.wav", "/failed/a.error.json"]
    assert got["env"]["MIMO_WATCHD_ERROR_JSON"] == "/failed/a.error.json"
    assert "MIMO_WATCHD_JSON" not in got["env"]


def test_failing_command_is_logged_and_counted(
    make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A non-zero exit becomes a warning with the status and output tail, and one count."""
    code = "import sys; print('mail server down', file=sys.stderr); sys.exit(3)"
    with capture_logs() as logs:
        runner = make_runner()
        runner.submit(command(sys.executable, "-c", code), "done", {}, {"audio": "/x.wav"})
        runner.close(10)
    assert failures == ["command"]
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert "exit status 3" in warning["reason"] and "mail server down" in warning["reason"]
    assert warning["audio"] == "/x.wav"


def test_missing_program_is_counted_not_raised(
    make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A command that cannot be started is a counted failure."""
    runner = make_runner()
    assert runner.submit(command("/nonexistent/notify-me"), "done", {}, {})
    runner.close(10)
    assert failures == ["command"]


def test_hanging_command_is_killed_while_others_run(
    tmp_path: Path, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A hook past its timeout is killed with its children; another hook is not held up."""
    pidfile, done = tmp_path / "grandchild.pid", tmp_path / "fast.json"
    hang = command("sh", "-c", f"sleep 60 & echo $! > '{pidfile}'; wait", timeout=1.0)
    runner = make_runner(workers=2)
    started = time.monotonic()
    runner.submit(hang, "done", {}, {})
    runner.submit(command(sys.executable, "-c", RECORD, str(done)), "done", {}, {})
    wait_for(done.exists, 0.9, "the second hook, which must not wait for the hanging one")
    assert failures.event.wait(5)
    assert 1.0 <= time.monotonic() - started < 4
    assert failures == ["command"]
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not alive(grandchild), 2, "the hanging hook's child to be killed")


def test_webhook_receives_the_json(
    receiver: Receiver, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """The webhook gets the payload as JSON with the outcome in a header."""
    runner = make_runner()
    runner.submit(webhook(receiver.url), "done", PAYLOAD, {"audio": "/a.wav"})
    assert runner.close(10)
    ((headers, body),) = receiver.requests
    assert json.loads(body) == PAYLOAD
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Mimo-Watchd-Outcome"] == "done"
    assert failures == []


def test_webhook_retries_after_500(
    receiver: Receiver, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A 500 is retried with backoff, with the same delivery id, until a 200."""
    receiver.statuses = [500, 503]
    runner = make_runner()
    runner.submit(webhook(receiver.url, retries=3), "done", PAYLOAD, {})
    assert runner.close(10)
    assert len(receiver.requests) == 3
    ids = {h["X-Mimo-Watchd-Delivery"] for h, _ in receiver.requests}
    assert len(ids) == 1
    assert failures == []


def test_webhook_gives_up_without_leaking_the_url(
    receiver: Receiver, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """After its retries a failing webhook is counted; the log names the host, not the token."""
    receiver.statuses = [502] * 10
    with capture_logs() as logs:
        runner = make_runner()
        runner.submit(webhook(receiver.url + "?token=SECRET123", retries=2), "done", {}, {})
        runner.close(10)
    assert len(receiver.requests) == 3
    assert failures == ["webhook"]
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert "HTTP 502" in warning["reason"] and "attempts: 3" in warning["reason"]
    assert "SECRET123" not in repr(logs)


def test_webhook_client_error_is_not_retried(
    receiver: Receiver, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A 4xx other than 429 means the receiver refuses: no retry."""
    receiver.statuses = [404]
    runner = make_runner()
    runner.submit(webhook(receiver.url, retries=5), "done", {}, {})
    runner.close(10)
    assert len(receiver.requests) == 1
    assert failures == ["webhook"]


def test_webhook_timeout(
    receiver: Receiver, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """A receiver slower than the timeout is a counted failure."""
    receiver.release.clear()
    runner = make_runner()
    runner.submit(webhook(receiver.url, timeout=0.2), "done", {}, {})
    assert failures.event.wait(5)
    assert failures == ["webhook"]


def test_submit_never_blocks_and_bounds_its_queue(
    tmp_path: Path, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """With the pool busy and the line full, submit returns at once and drops (and counts)."""
    marker = tmp_path / "running"
    hang = command("sh", "-c", f"touch '{marker}'; sleep 60", timeout=30)
    runner = make_runner(workers=1, max_pending=1)
    assert runner.submit(hang, "done", {}, {})
    wait_for(marker.exists, 5, "the hook to start")
    started = time.monotonic()
    assert runner.submit(hang, "done", {}, {})  # waits in line
    assert not runner.submit(hang, "done", {}, {})  # line full
    assert time.monotonic() - started < 1.0  # blocking would take the 30 s hook timeout
    assert failures == ["command"]
    runner.close(0.1)


def test_close_kills_what_is_left(
    tmp_path: Path, make_runner: Callable[..., HookRunner], failures: Failures
) -> None:
    """close(timeout) kills running hooks at the deadline and refuses new ones."""
    marker = tmp_path / "running"
    runner = make_runner(workers=1)
    runner.submit(command("sh", "-c", f"touch '{marker}'; sleep 60", timeout=30), "done", {}, {})
    runner.submit(command("true"), "done", {}, {})  # still waiting in line at close
    wait_for(marker.exists, 5, "the hook to start")
    started = time.monotonic()
    assert runner.close(0.3) is False
    assert time.monotonic() - started < 3
    assert failures == ["command", "command"]
    assert not runner.submit(command("true"), "done", {}, {})
    assert "hook-0" not in [t.name for t in threading.enumerate()]
