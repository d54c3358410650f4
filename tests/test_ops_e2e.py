"""Issue 16 through the real daemon: path templates, notifications to real receivers,
retention of files with old mtimes, and a daily budget reached during a real run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mimo_watchd.emulator import Emulator, tones
from tests.daemon_support import DaemonProcess, run_cli
from tests.receivers import JsonReceiver, SmtpSink, free_port
from tests.support import Deployment, wait_for
from tests.test_messaging import needs_apprise, needs_smtp
from tests.test_operations import scrape


@pytest.mark.e2e
def test_templates_place_sets_by_arrival_and_number_them_together(
        emu: Emulator, tmp_path: Path) -> None:
    """Audio under {arrived:%Y}/{relpath}, sidecars under {language}; a second recording of
    the same name takes -1 for its whole set; a name that is not UTF-8 keeps its bytes."""
    layout = Deployment(tmp_path, test_timing=True)
    layout.write_config(emu.url, watch={
        "processed_path": "{arrived:%Y}/{relpath}/{stem}{ext}",
        "output_path": "{language}/{relpath}/{stem}"})
    year = time.strftime("%Y")
    (layout.inbox / "calls").mkdir()
    tones.write(layout.inbox / "calls/a.wav", ["alpha", "bravo"])
    odd = os.fsdecode(b"\xff\xfe.wav")
    tones.write(layout.inbox / odd, ["charlie"])
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        wait_for(lambda: layout.finished() == 2, 30, what="two files")
        tones.write(layout.inbox / "calls/a.wav", ["delta", "echo"])
        wait_for(lambda: layout.finished() == 3, 30, what="the second a.wav")
        d.wait_idle()
    finally:
        assert d.stop() == 0
    p = layout.processed
    assert (p / year / "calls/a.wav").exists() and (p / year / "calls/a-1.wav").exists()
    assert (p / "auto/calls/a.txt").read_text() == "alpha bravo.\n"
    assert (p / "auto/calls/a-1.txt").read_text() == "delta echo.\n"
    assert json.loads((p / "auto/calls/a-1.json").read_text())["source"]["path"] == str(
        p / year / "calls/a-1.wav")
    assert os.path.exists(os.fsencode(p / year) + b"/\xff\xfe.wav")
    assert os.path.exists(os.fsencode(p / "auto") + b"/\xff\xfe.txt")
    assert list(layout.inbox.rglob("*.wav")) == []


@pytest.mark.e2e
@needs_apprise
@needs_smtp
def test_notifications_carry_the_transcript_to_real_receivers(
        emu: Emulator, tmp_path: Path) -> None:
    """A transcribed file sends its transcript as a JSON POST and a mail; a URL that cannot be
    reached is a warning naming only its place and scheme, and both are counted."""
    receiver, sink = JsonReceiver(), SmtpSink()
    dead = f"json://mimo:s3cret-passw0rd@127.0.0.1:{free_port()}/t0ken-abcdef123456"
    port = free_port()
    layout = Deployment(tmp_path, test_timing=True)
    layout.write_config(emu.url, metrics={"listen": f"127.0.0.1:{port}"}, watch={"notify": {
        "urls": [receiver.url(), sink.url(), dead], "retries": 0,
        "title": "{name}", "body": "{transcript} ({duration}, {cost})"}})
    tones.write(layout.inbox / "memo.wav", ["alpha", "bravo"])
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        wait_for(lambda: len(d.saw("message.sent")) == 2 and d.saw("message.failed"), 60,
                 what="two messages sent, one failed")
        m = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        assert d.stop() == 0
        receiver.close()
        sink.close()
    (post,) = receiver.received
    assert post["title"] == "memo.wav"
    assert post["message"] == "alpha bravo. (0:01, 0.0001 CNY)"
    (mail,) = sink.messages
    assert mail.get_body(("plain",)).get_content().strip() == "alpha bravo. (0:01, 0.0001 CNY)"
    (failed,) = d.saw("message.failed")
    assert failed["to"] == "urls[2] (json://)"
    assert m['mimo_watchd_messages_total{result="sent"}'] == 2
    assert m['mimo_watchd_messages_total{result="failed"}'] == 1
    for secret in ("s3cret-passw0rd", "t0ken-abcdef123456"):
        assert secret not in d.text()


@pytest.mark.e2e
def test_retention_deletes_old_audio_at_start_and_prune_shows_it_first(
        emu: Emulator, tmp_path: Path) -> None:
    """Files processed by the daemon, then given mtimes 40 days old: `prune --dry-run` lists
    the old audio and deletes nothing; the daemon deletes it at start and logs each file; the
    sidecars and the young set stay."""
    layout = Deployment(tmp_path, test_timing=True)
    layout.write_config(emu.url, watch={"retention": {"processed_days": 30}})
    tones.write(layout.inbox / "old.wav", ["alpha"])
    tones.write(layout.inbox / "new.wav", ["bravo"])
    assert DaemonProcess(layout, once=True).wait(60) == 0
    p = layout.processed
    old = 40 * 86400
    for name in ("old.wav", "old.txt", "old.json"):
        os.utime(p / name, (time.time() - old, time.time() - old))
    dry = run_cli(layout, "prune", "-c", str(layout.config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {p / 'old.wav'} (audio, 40 days)" in dry.stdout
    assert "1 file(s) would delete" in dry.stdout
    assert (p / "old.wav").exists()
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        (line,) = wait_for(lambda: d.saw("retention.deleted"), 30, what="retention")
    finally:
        assert d.stop() == 0
    assert (line["path"], line["file"], line["age_days"]) == (str(p / "old.wav"), "audio", 40.0)
    assert sorted(x.name for x in p.iterdir()) == ["new.json", "new.txt", "new.wav", "old.json",
                                                   "old.txt"]


def _budget(layout: Deployment, emu: Emulator, budget: float, port: int) -> None:
    # 7200 per hour: each billed second costs 2 CNY, so one file of 1 s reaches a budget of 2.
    layout.write_config(emu.url, metrics={"listen": f"127.0.0.1:{port}"},
                        api={"price_per_hour": 7200.0, "daily_budget": budget})


@pytest.mark.e2e
def test_a_daily_budget_reached_pauses_api_work_until_raised_and_survives_a_restart(
        emu: Emulator, tmp_path: Path) -> None:
    """The first file reaches the budget; the second stays queued, unsent, while status and
    /healthz say why; raising the budget (SIGHUP) lets it through; after a restart the day's
    bill is read from the ledger, so a third file waits again."""
    layout = Deployment(tmp_path, test_timing=True)
    port = free_port()
    _budget(layout, emu, 2.0, port)
    tones.write(layout.inbox / "first.wav", ["alpha", "bravo"])
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        wait_for(lambda: layout.finished() == 1, 30, what="the first file")
        calls = len(emu.calls)
        tones.write(layout.inbox / "second.wav", ["charlie", "delta"])
        status = wait_for(lambda: (s := d.status()) and s["paused"] and s, 30, what="a pause")
        assert "daily budget of 2.00 CNY is reached" in status["paused_reason"]
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 503 and "daily budget" in health.text
        shown = run_cli(layout, "status", "-c", str(layout.config))
        assert "PAUSED since" in shown.stdout and "daily budget" in shown.stdout
        assert "billed today: 0:01 of audio, 2.00 CNY in 1 answer(s)" in shown.stdout
        assert (layout.inbox / "second.wav").exists() and len(emu.calls) == calls
        (done,) = d.saw("job.done")
        assert (done["cost"], done["currency"]) == (2.0, "CNY")
        _budget(layout, emu, 100.0, port)
        d.signal(signal.SIGHUP)
        wait_for(lambda: layout.finished() == 2, 30, what="the second file after the reload")
        assert d.saw("daemon.resumed")
    finally:
        assert d.stop() == 0
    doc: dict[str, Any] = json.loads((layout.processed / "second.json").read_text())
    assert doc["cost"]["amount"] == 2.0 and doc["cost"]["complete"] is True
    _budget(layout, emu, 4.0, port)  # 4 CNY billed today already
    tones.write(layout.inbox / "third.wav", ["echo"])
    d = DaemonProcess(layout)
    try:
        d.wait_ready()
        wait_for(lambda: (s := d.status()) and s["paused"], 30, what="a pause after restart")
        assert (layout.inbox / "third.wav").exists()
        billed = json.loads(run_cli(layout, "status", "-c", str(layout.config), "--json").stdout)
        assert billed["bill"]["today"]["billed_seconds"] == 2
        assert billed["bill"]["today"]["cost"] == 4.0
    finally:
        assert d.stop() == 0
