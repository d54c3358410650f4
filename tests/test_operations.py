"""Unattended operation with the real daemon: sd_notify, watchdog, metrics, health, hooks, check."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import API_KEY, DaemonProcess, run_cli
from tests.support import Deployment, wait_for


class NotifySocket:
    """A real AF_UNIX datagram socket collecting what the daemon sends to $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in self.messages for line in m.splitlines()]

    def pings_since(self, t: float) -> int:
        return sum(1 for at, m in self.messages if at >= t and "WATCHDOG=1" in m.splitlines())

    def quiet_for(self, seconds: float) -> bool:
        """True when no WATCHDOG=1 came in the last ``seconds``."""
        return self.pings_since(time.monotonic() - seconds) == 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.mark.e2e
def test_notify_ready_status_watchdog_and_hang(emu: Emulator, tmp_path: Path) -> None:
    """READY, STATUS and WATCHDOG pings flow; a hung request stops the pings."""
    layout = Deployment(tmp_path, test_timing=True)
    sock = NotifySocket(tmp_path / "notify.sock")
    layout.write_config(emu.url, worker_stall_seconds=1.0,
                        api={"timeout_base_seconds": 120.0, "max_retries": 0})
    env = {"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": "400000"}
    d = DaemonProcess(layout, env=env)
    try:
        wait_for(lambda: "READY=1" in sock.lines(), 30, what="READY=1")
        tones.write(layout.inbox / "ok.wav", ["alpha", "bravo"])
        wait_for(lambda: (layout.processed / "ok.txt").exists(), 30, what="first file")
        wait_for(lambda: any(line.startswith("STATUS=") and "done 1" in line
                             for line in sock.lines()), 10, what="STATUS update")
        t0 = time.monotonic()
        wait_for(lambda: sock.pings_since(t0) >= 3, 10, what="pings (every 0.2 s)")
        emu.add_fault(FaultRule("hang"))
        tones.write(layout.inbox / "hang.wav", ["charlie", "delta"])
        wait_for(lambda: emu.in_flight(), 20, what="hanging request")
        wait_for(lambda: [e for e in d.saw("watchdog.withheld") if "progress" in e["reason"]],
                 20, what="the daemon to withhold its pings for the hung worker")
        # Five ping intervals without one: never true while pings flow.
        wait_for(lambda: sock.quiet_for(1.0), 10, what="pings to stop while a worker is hung")
        assert d.proc.poll() is None
    finally:
        d.kill()
        sock.close()


@pytest.mark.e2e
def test_reload_sends_reloading_then_ready(emu: Emulator, tmp_path: Path) -> None:
    """SIGHUP is bracketed by RELOADING=1 and READY=1; SIGTERM sends STOPPING=1."""
    import signal

    layout = Deployment(tmp_path, test_timing=True)
    sock = NotifySocket(tmp_path / "notify.sock")
    layout.write_config(emu.url)
    d = DaemonProcess(layout, env={"NOTIFY_SOCKET": str(sock.path)})
    try:
        wait_for(lambda: "READY=1" in sock.lines(), 30, what="READY=1")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "RELOADING=1" in sock.lines() and sock.lines().count("READY=1") >= 2,
                 20, what="reload notifications")
        assert d.stop() == 0
        assert "STOPPING=1" in sock.lines()
    finally:
        d.kill()
        sock.close()


def scrape(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.mark.e2e
def test_metrics_and_healthz_during_processing(emu: Emulator, tmp_path: Path) -> None:
    """/metrics counts files, calls, billed seconds; /healthz turns 503 while paused."""
    layout = Deployment(tmp_path, test_timing=True)
    port = _free_port()
    layout.write_config(emu.url, metrics={"listen": f"127.0.0.1:{port}"})
    emu.add_fault(FaultRule("500", times=1))
    for i, w in enumerate(["alpha", "bravo", "charlie"]):
        tones.write(layout.inbox / f"m{i}.wav", [w, "zulu"])
    d = DaemonProcess(layout)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(list(layout.processed.glob("*.txt"))) == 3, 30, what="files")
        m = wait_for(lambda: (v := scrape(base + "/metrics")).get(
            'mimo_watchd_files_total{outcome="done"}') == 3 and v, 10, what="metrics")
        assert m['mimo_watchd_api_requests_total{status="200"}'] == 3
        assert m['mimo_watchd_api_requests_total{status="500"}'] == 1
        assert m["mimo_watchd_api_retries_total"] >= 1
        assert m["mimo_watchd_billed_seconds_total"] >= 3
        assert m["mimo_watchd_last_success_timestamp_seconds"] > 0
        assert m["mimo_watchd_processing_seconds_count"] == 3
        assert m["mimo_watchd_paused"] == 0
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
        emu.add_fault(FaultRule("402", times=1000))
        tones.write(layout.inbox / "broke.wav", ["echo", "zulu"])
        wait_for(lambda: httpx.get(base + "/healthz", timeout=5).status_code == 503, 30,
                 what="unhealthy while paused")
        r = httpx.get(base + "/healthz", timeout=5)
        assert "paused" in r.text and "402" in r.text
        assert scrape(base + "/metrics")["mimo_watchd_paused"] == 1
        assert API_KEY not in httpx.get(base + "/metrics", timeout=5).text
    finally:
        d.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.e2e
def test_hooks_run_with_data_and_bad_hooks_do_not_disturb(emu: Emulator, tmp_path: Path) -> None:
    """A command hook and a webhook get the data; a failing and a hanging hook change nothing."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        layout = Deployment(tmp_path, test_timing=True)
        record = tmp_path / "hook-record.jsonl"
        script = tmp_path / "hook.py"
        script.write_text(
            "import json, os, sys\n"
            f"with open({str(record)!r}, 'a') as fh:\n"
            "    fh.write(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in "
            "os.environ.items() if k.startswith('MIMO')}}) + '\\n')\n")
        second = tmp_path / "inbox2"
        second.mkdir()
        layout.write_config(
            emu.url,
            watch={"on_success": {"command": [sys.executable, str(script)],
                                  "webhook": f"http://127.0.0.1:{server.server_port}/hook"},
                   "on_failure": {"command": [sys.executable, str(script)]}},
            extra_watches=[{"path": str(second), "processed_dir": str(tmp_path / "p2"),
                            "failed_dir": str(tmp_path / "f2"), "settle_seconds": 0.3,
                            # sh -c ignores the arguments the daemon appends (outcome, path)
                            "on_success": {"command": ["/bin/sh", "-c", "sleep 30", "hook"],
                                           "timeout_seconds": 1.0},
                            "on_failure": {"command": ["/bin/false"]}}])
        emu.add_fault(FaultRule("400", times=2, when_word="kilo"))
        tones.write(layout.inbox / "good.wav", ["alpha", "zulu"])
        tones.write(layout.inbox / "bad.wav", ["kilo", "zulu"])
        tones.write(second / "slowhook.wav", ["bravo", "zulu"])
        tones.write(second / "falsehook.wav", ["kilo", "lima"])
        d = DaemonProcess(layout, once=True)
        assert d.wait(60) == 1, d.text()  # bad.wav and falsehook.wav failed
        records = [json.loads(line) for line in record.read_text().splitlines()]
        by_outcome = {r["argv"][0]: r for r in records}
        assert set(by_outcome) == {"done", "failed"}
        done = by_outcome["done"]
        assert done["argv"][1] == str(layout.processed / "good.wav")
        assert done["env"]["MIMO_WATCHD_JSON"] == str(layout.processed / "good.json")
        assert "MIMO_API_KEY" not in done["env"]
        assert by_outcome["failed"]["env"]["MIMO_WATCHD_ERROR_JSON"].endswith("bad.error.json")
        assert [r["transcript"] for r in _Receiver.received] == ["alpha zulu."]
        assert (tmp_path / "p2" / "slowhook.txt").read_text() == "bravo zulu.\n"
        assert (tmp_path / "f2" / "falsehook.error.json").exists()
        failed_hooks = {(Path(e["audio"]).name, e["outcome"], e["reason"])
                        for e in d.saw("hook.failed")}
        assert failed_hooks == {("slowhook.wav", "done", "timed out after 1 s; killed"),
                                ("falsehook.wav", "failed", "exit status 1; output: ''")}
    finally:
        server.shutdown()
        server.server_close()


def test_check_command(emu: Emulator, tmp_path: Path) -> None:
    """check validates config and key (78 on problems) and --api reports auth problems (69)."""
    layout = Deployment(tmp_path, test_timing=True)
    layout.write_config(emu.url)
    r = run_cli(layout, "check", "-c", str(layout.config), "--api")
    assert r.returncode == 0, r.stderr
    assert "api ok" in r.stdout
    emu.add_fault(FaultRule("401", times=5))
    r = run_cli(layout, "check", "-c", str(layout.config), "--api")
    assert r.returncode == 69 and "401" in r.stderr
    r = run_cli(layout, "check", "-c", str(layout.config), env={"MIMO_API_KEY": ""})
    assert r.returncode == 78 and "no API key" in r.stderr
    layout.config.write_text("watches: []\napi: {colour: red}\n")
    r = run_cli(layout, "check", "-c", str(layout.config))
    assert r.returncode == 78 and "api.colour" in r.stderr and "watches" in r.stderr
