"""Running the real daemon as a child process against an in-test emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support import Deployment, wait_for

API_KEY = "sk-daemon-test-key-0123456789"
REPO = Path(__file__).resolve().parent.parent


class DaemonProcess:
    """``mimo-watchd run`` as a real child process, its log captured to a file."""

    def __init__(self, layout: Deployment, *, once: bool = False, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.layout = layout
        self.log_path = layout.root / f"daemon-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "mimo_watchd", "run", "-c", str(layout.config)]
        if once:
            cmd.append("--once")
        cmd += args or []
        full_env = {**os.environ, "MIMO_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
        full_env.pop("MIMO_BASE_URL", None)
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=layout.root)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def saw(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the daemon watches its folders (and has scanned them once)."""
        wait_for(lambda: self.saw("daemon.ready") or self.proc.poll() is not None, timeout,
                 what="daemon ready")
        assert self.proc.poll() is None, self.log_path.read_text()

    def status(self) -> dict[str, Any] | None:
        """The status the daemon last wrote (``status.json``), if any yet."""
        try:
            doc: dict[str, Any] = json.loads((self.layout.state / "status.json").read_text())
        except (OSError, ValueError):
            return None
        return doc

    def wait_idle(self, timeout: float = 30.0) -> dict[str, Any]:
        """Waits until a status the daemon wrote after this call reports its intake quiet (no
        watch busy, nothing settling or being admitted; a polling watch two rounds further)
        and nothing queued or in progress; returns that status.

        Where a test once slept so that anything late "would show now", this is the moment from
        which nothing more happens unless something new arrives.
        """
        since = datetime.now(UTC)
        first = self.status() or {}
        polls = {w["path"]: w["polls"] for w in first.get("watches", [])}

        def idle() -> dict[str, Any] | None:
            assert self.proc.poll() is None, self.text()[-3000:]
            doc = self.status()
            if doc is None or datetime.fromisoformat(doc["updated_at"]) <= since:
                return None
            if (doc["intake_busy"] or doc["settling"] or doc["queued"] or doc["in_progress"]
                    or any(w["mode"] != "inotify" and w["polls"] < polls.get(w["path"], 0) + 2
                           for w in doc["watches"])):
                return None
            return doc

        result: dict[str, Any] = wait_for(
            idle, timeout, "the daemon to report its intake quiet and nothing queued or in "
            "progress")
        return result

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.wait(5)
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_cli(layout: Deployment, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MIMO_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mimo_watchd", *args], capture_output=True,
                          text=True, env=full_env, cwd=layout.root, timeout=timeout,
                          check=False)
