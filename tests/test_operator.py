"""What an operator does to a running daemon, through the real process: retry a fresh failure,
fix the key and reload, change the log level, read the status after a crash, check the
config and the API, watch for ignored files, and start it under systemd's watchdog."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess, run_cli
from tests.support import Deployment, wait_for
from tests.test_operations import NotifySocket

pytestmark = pytest.mark.e2e


@pytest.fixture
def layout(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path, test_timing=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_file_retried_right_after_it_failed_is_taken_again(emu: Emulator,
                                                             layout: Deployment) -> None:
    """A file that failed seconds ago and is moved back by retry (same inode, size and mtime)
    is taken again by the running daemon, and a second retry finds it failed again."""
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        (layout.inbox / "quick.mp3").write_text("not audio at all\n" * 10)
        wait_for(lambda: (layout.failed / "quick.error.json").exists(), 30, what="the failure")
        for round_ in (1, 2):
            rt = run_cli(layout, "retry", "-c", str(layout.config),
                         str(layout.failed / "quick.mp3"))
            assert rt.returncode == 0 and "1 file(s) moved back" in rt.stdout, rt
            wait_for(lambda r=round_: len(d.saw("job.failed")) == r + 1, 30,
                     what=f"the file taken again after retry {round_}")
            assert (layout.failed / "quick.mp3").exists()
    finally:
        assert d.stop() == 0, d.text()
    assert [e["path"] for e in d.saw("job.failed")] == [str(layout.inbox / "quick.mp3")] * 3


def test_a_key_fixed_in_its_file_is_used_after_sighup_at_once(
        make_emulator: object, layout: Deployment, tmp_path: Path) -> None:
    """Paused by 401, the operator writes the right key into api_key_file and sends SIGHUP:
    the reload reads the new key, probes at once (not after pause_probe_seconds, an hour
    here) and the file is transcribed."""
    emu = make_emulator(api_keys=frozenset({"sk-the-right-key"}))  # type: ignore[operator]
    key_file = tmp_path / "api-key"
    key_file.write_text("sk-a-wrong-key\n")
    layout.write_config(emu.url, pause_probe_seconds=3600.0,
                        api={"api_key_file": str(key_file)})
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        tones.write(layout.inbox / "k.wav", ["kilo", "zulu"])
        wait_for(lambda: d.saw("daemon.paused"), 30, what="the pause on 401")
        key_file.write_text("sk-the-right-key\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: (layout.processed / "k.txt").exists(), 30, what="the file, at once")
    finally:
        assert d.stop() == 0, d.text()
    (reload,) = d.saw("reload.done")
    assert reload["api_key"] == "new"
    assert "sk-the-right-key" not in d.text() and "sk-a-wrong-key" not in d.text()


def test_sighup_applies_the_log_level_and_names_what_needs_a_restart(
        emu: Emulator, layout: Deployment) -> None:
    """A reload that lowers log.level to debug logs debug lines from then on; one that changes
    metrics.listen or api.max_concurrency says they keep their old values until a restart."""
    layout.write_config(emu.url, log={"format": "json", "level": "info"})
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        tones.write(layout.inbox / "a.wav", ["alpha", "zulu"])
        wait_for(lambda: (layout.processed / "a.txt").exists(), 30, what="a first file")
        assert not d.saw("intake.queued")  # a debug line
        layout.write_config(emu.url, log={"format": "json", "level": "debug"},
                            concurrency=5, metrics={"listen": f"127.0.0.1:{_free_port()}"})
        d.signal(signal.SIGHUP)
        (reload,) = wait_for(lambda: d.saw("reload.done"), 20, what="the reload")
        tones.write(layout.inbox / "b.wav", ["bravo", "zulu"])
        wait_for(lambda: d.saw("intake.queued"), 30, what="a debug line after the reload")
    finally:
        assert d.stop() == 0, d.text()
    assert reload["changed"] == ["log.level"]
    (restart,) = d.saw("reload.restart_needed")
    assert restart["settings"] == ["api.max_concurrency", "metrics.listen"]
    assert restart["level"] == "warning"


def test_status_after_an_unclean_stop_and_without_a_state_folder(emu: Emulator,
                                                                  layout: Deployment) -> None:
    """After kill -9 mid-request, status says not running (exit 3) and counts the cut-off
    file as queued (interrupted), not in progress; on a state folder that does not exist it
    says so, exits 3, and creates nothing; one it cannot read is one line and exit 78."""
    emu.add_fault(FaultRule("slow", delay=5.0))
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    tones.write(layout.inbox / "cut.wav", ["charlie", "zulu"])
    wait_for(emu.in_flight, 20, what="the request in flight")
    d.kill()
    st = run_cli(layout, "status", "-c", str(layout.config), "--json")
    doc = json.loads(st.stdout)
    assert st.returncode == 3 and not doc["running"]
    assert (doc["queued"], doc["in_progress"], doc["interrupted"]) == (1, 0, 1)
    text = run_cli(layout, "status", "-c", str(layout.config))
    assert text.returncode == 3 and "not running" in text.stdout
    assert "files: queued 1, in progress 0" in text.stdout and "1 of the queued" in text.stdout
    elsewhere = layout.root / "never-used"
    layout.write_config(emu.url, state_dir=str(elsewhere))
    st = run_cli(layout, "status", "-c", str(layout.config))
    assert st.returncode == 3 and "no ledger yet" in st.stdout
    assert not elsewhere.exists()
    (layout.root / "a-file").write_text("")
    layout.write_config(emu.url, state_dir=str(layout.root / "a-file" / "state"))
    st = run_cli(layout, "status", "-c", str(layout.config))
    assert st.returncode == 78 and st.stderr.strip() == (
        f"{layout.config}: state_dir: cannot read {layout.root / 'a-file' / 'state'}: "
        "Not a directory")


def test_check_api_names_the_url_and_has_its_own_code_when_unreachable(
        layout: Deployment) -> None:
    """check --api against a closed port exits 68 (not 69, the API refused), names the URL,
    and its retry lines are JSON on a non-terminal (the configured log format)."""
    url = f"http://127.0.0.1:{_free_port()}/v1"
    layout.write_config(url, log={"format": "auto", "level": "info"})
    r = run_cli(layout, "check", "-c", str(layout.config), "--api")
    assert r.returncode == 68, r
    retries = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in retries] == ["api.retry", "api.retry"]
    (failed,) = [line for line in r.stderr.splitlines() if line.startswith("api: FAILED")]
    assert failed.startswith(f"api: FAILED: {url}/chat/completions: the API at 127.0.0.1:")


def test_check_refuses_a_hook_whose_program_cannot_run(emu: Emulator, layout: Deployment,
                                                        tmp_path: Path) -> None:
    """check exits 78 for a hook command that does not exist or is not executable (the daemon
    itself starts and warns: a hook never stops the real work)."""
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\n")
    layout.write_config(emu.url, watch={
        "on_success": {"command": [str(tmp_path / "missing-hook")]},
        "on_failure": {"command": [str(script)]}})
    r = run_cli(layout, "check", "-c", str(layout.config))
    assert r.returncode == 78
    assert f"watches[0].on_success.command: {tmp_path / 'missing-hook'} does not exist" in r.stderr
    assert f"watches[0].on_failure.command: {script} is not executable" in r.stderr
    script.chmod(0o755)
    layout.write_config(emu.url, watch={"on_failure": {"command": [str(script)]},
                                        "on_success": {"command": ["no-such-program-here"]}})
    r = run_cli(layout, "check", "-c", str(layout.config))
    assert r.returncode == 78 and "no-such-program-here is not found on PATH" in r.stderr
    layout.write_config(emu.url, watch={"on_success": {"command": [sys.executable]}})
    assert run_cli(layout, "check", "-c", str(layout.config)).returncode == 0


def test_files_the_watch_does_not_take_are_logged_once_and_counted(
        emu: Emulator, layout: Deployment) -> None:
    """A file the include globs do not match, and a sender's temp name, are each logged once
    at debug (intake.ignored, with the reason) however often they change, and counted; so is
    one only the scan at start finds."""
    port = _free_port()
    layout.write_config(emu.url, metrics={"listen": f"127.0.0.1:{port}"})
    (layout.inbox / "readme.md").write_text("there before the daemon\n")
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        for _ in range(3):
            (layout.inbox / "notes.txt").write_text("minutes\n")
            (layout.inbox / "call.wav.part").write_bytes(b"RIFF")
        d.wait_idle()
    finally:
        assert d.stop() == 0, d.text()
    ignored = sorted((e["path"], e["reason"], e["level"]) for e in d.saw("intake.ignored"))
    assert ignored == [
        (str(layout.inbox / "call.wav.part"),
         "a hidden or temporary name (a file still being written)", "debug"),
        (str(layout.inbox / "notes.txt"), "not matched by include", "debug"),
        (str(layout.inbox / "readme.md"), "not matched by include", "debug")]


def test_ignored_files_are_counted_in_the_metrics(emu: Emulator, layout: Deployment) -> None:
    """The metrics count ignored files by reason, each path once."""
    port = _free_port()
    layout.write_config(emu.url, metrics={"listen": f"127.0.0.1:{port}"})
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        for name in ("a.txt", "b.txt", "a.txt"):
            (layout.inbox / name).write_text("x")
        d.wait_idle()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        assert d.stop() == 0, d.text()
    assert 'mimo_watchd_files_ignored_total{reason="not matched by include"} 2.0' in text


def test_the_watchdog_pings_from_the_start_without_a_false_alarm(emu: Emulator,
                                                                 layout: Deployment,
                                                                 tmp_path: Path) -> None:
    """Under systemd's watchdog the daemon pings once its watchers run, and never withholds
    a ping at start (its first health check used to run before the watchers existed)."""
    sock = NotifySocket(tmp_path / "notify.sock")
    layout.write_config(emu.url)
    d = DaemonProcess(layout, env={"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": "400000"})
    try:
        wait_for(lambda: "READY=1" in sock.lines() and sock.pings_since(0) >= 3, 30,
                 what="READY and three pings")
    finally:
        assert d.stop() == 0, d.text()
        sock.close()
    assert not d.saw("watchdog.withheld") and not d.saw("watchdog.resumed")


def test_status_shows_a_name_that_is_not_utf8(emu: Emulator, layout: Deployment) -> None:
    """A failed file whose name is not UTF-8 is listed by status, escaped in the text and
    round-tripping in the JSON, instead of making the command fail."""
    layout.write_config(emu.url)
    bad = os.fsencode(layout.inbox) + b"/\xff\xfe.mp3"
    with open(bad, "wb") as fh:
        fh.write(b"not audio at all\n" * 10)
    assert DaemonProcess(layout, once=True).wait(60) == 1
    text = run_cli(layout, "status", "-c", str(layout.config))
    assert text.returncode == 3, text.stderr
    assert f"{layout.failed}/\\udcff\\udcfe.mp3: " in text.stdout
    st = run_cli(layout, "status", "-c", str(layout.config), "--json")
    (failure,) = json.loads(st.stdout)["recent_failures"]
    assert os.fsencode(failure["path"]) == os.fsencode(layout.failed) + b"/\xff\xfe.mp3"
    retried = run_cli(layout, "retry", "-c", str(layout.config), "--failed")
    assert retried.returncode == 0 and "\\udcff\\udcfe.mp3" in retried.stdout
    assert os.path.exists(bad)
