"""Notifications that carry the transcript (issue 16 item 2): what a message says, delivery
through Apprise to real local receivers (json:// over HTTP, mailto:// to an SMTP sink),
retries, and URLs that never reach a log line."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from mimo_watchd import logsetup, messaging, notifyurls
from mimo_watchd.billing import Cost, Price
from mimo_watchd.config import NotifySettings, parse
from mimo_watchd.errors import ConfigError
from mimo_watchd.records import Failed, Skipped, Transcribed
from tests.receivers import JsonReceiver, SmtpSink
from tests.support import wait_for
from tests.test_placement import DOC

needs_apprise = pytest.mark.skipif(
    not notifyurls.available(), reason="Apprise is not installed (pip install -e '.[test]')")
needs_smtp = pytest.mark.skipif(
    importlib.util.find_spec("aiosmtpd") is None,
    reason="aiosmtpd is not installed (pip install -e '.[test]')")


def transcribed(text: str = "你好，世界。Hello.") -> Transcribed:
    doc = json.loads(json.dumps(DOC))
    doc["source"].update(path="/srv/done/call.wav", original_path="/srv/in/call.wav",
                         duration_seconds=312.4)
    doc["transcript"] = text
    doc["cost"] = Cost.of([{"seconds": 313}], Price(0.5, "CNY")).to_json()
    return Transcribed.from_json(doc)


def failed() -> Failed:
    return Failed(path="/srv/failed/bad.wav", original_path="/srv/in/bad.wav", sha256=None,
                  reason="not audio: no stream", error="AudioError", http_status=None,
                  api_error=None, request_id=None, attempts=1, failed_at="t")


def test_a_message_carries_the_transcript_name_duration_and_cost() -> None:
    """The default title and body: name and outcome; duration, cost and the transcript."""
    msg = messaging.message(NotifySettings(urls=("json://x",)), transcribed(), "in")
    assert msg is not None
    assert msg.title == "call.wav: done"
    assert msg.body == "5:12 of audio, 0.0435 CNY\n\n你好，世界。Hello."


def test_the_transcript_is_cut_and_a_failure_says_why() -> None:
    """max_chars cuts the transcript (marked); a failure's message gives the reason; `on`
    chooses which outcomes send; a skipped duplicate sends nothing."""
    notify = NotifySettings(urls=("json://x",), max_chars=10, body="{transcript}")
    cut = messaging.message(notify, transcribed("a" * 50), "in")
    assert cut is not None and cut.body == "a" * 7 + "..."
    fail = messaging.message(NotifySettings(urls=("json://x",)), failed(), "in")
    assert fail is not None and fail.title == "bad.wav: failed"
    assert fail.body == "failed after 1 attempt(s) (AudioError)\n\nnot audio: no stream"
    assert messaging.message(NotifySettings(urls=("json://x",), on=("success",)),
                             failed(), "in") is None
    assert messaging.message(NotifySettings(urls=("json://x",)), Skipped(None), "in") is None


def test_notify_without_apprise_names_the_extra(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch with notify but no Apprise installed is a config error naming the extra."""
    monkeypatch.setattr(notifyurls, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"watches\[0\]\.notify: needs Apprise, which is not "
                       r"installed: pip install 'mimo-watchd\[notify\]'"):
        parse(_config(tmp_path, ["json://127.0.0.1/x"]), base=tmp_path)


@needs_apprise
def test_a_url_apprise_cannot_use_is_named_by_place_never_by_text(tmp_path: Path) -> None:
    """An unknown scheme is refused at load, naming urls[1] and its scheme, not the URL."""
    with pytest.raises(ConfigError) as info:
        parse(_config(tmp_path, ["json://127.0.0.1/x", "nosuch://tok3n-s3cret@host"]),
              base=tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("watches[0].notify.urls[1]: Apprise does not understand this "
                              "nosuch:// URL")
    assert "tok3n" not in problem


def _config(tmp_path: Path, urls: list[str], **notify: Any) -> dict[str, Any]:
    return {"watches": [{"path": str(tmp_path / "in"), "processed_dir": str(tmp_path / "p"),
                         "failed_dir": str(tmp_path / "f"),
                         "notify": {"urls": urls, **notify}}]}


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Every log line, rendered as the daemon renders it (JSON, redacted)."""
    out = io.StringIO()
    logsetup.configure("debug", "json", stream=out)
    yield out


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    r = JsonReceiver()
    yield r
    r.close()


@needs_apprise
@needs_smtp
def test_messages_reach_a_real_http_receiver_and_a_real_mailbox(
        receiver: JsonReceiver, tmp_path: Path, log_text: io.StringIO) -> None:
    """One message per URL: a JSON POST and a mail, each with the title and the transcript."""
    sink = SmtpSink()
    results: list[bool] = []
    messenger = messaging.Messenger(on_sent=results.append)
    try:
        notify = NotifySettings(urls=(receiver.url(), sink.url()))
        assert messenger.submit(notify, transcribed(), "in")
        wait_for(lambda: len(results) == 2, 30, "two deliveries")
    finally:
        assert messenger.close(10)
        sink.close()
    assert results == [True, True]
    (post,) = receiver.received
    assert (post["path"], post["title"]) == ("/mimo", "call.wav: done")
    assert "你好，世界。Hello." in post["message"]
    (mail,) = sink.messages
    assert mail["Subject"] == "call.wav: done"
    assert "你好，世界。Hello." in mail.get_body(("plain",)).get_content()
    assert log_text.getvalue().count('"message.sent"') == 2


@needs_apprise
def test_a_failing_receiver_is_retried_then_warned_without_its_secrets(
        receiver: JsonReceiver, tmp_path: Path, log_text: io.StringIO) -> None:
    """A receiver answering 500 is tried again with backoff; when every attempt fails the
    failure is a warning and a count, and no log line holds the URL, its password or token."""
    url = receiver.url(path="/hook/tok-0123456789abcdef", auth="mimo:pa55w0rd-secret@")
    settings = parse(_config(tmp_path, [url], retries=2), base=tmp_path)  # registers secrets
    notify = settings.watches[0].notify
    assert notify is not None
    receiver.answers = [500, 500, 500]
    results: list[bool] = []
    messenger = messaging.Messenger(on_sent=results.append, backoff_initial_seconds=0.01,
                                    backoff_max_seconds=0.02)
    try:
        messenger.submit(notify, failed(), "in")
        wait_for(lambda: results, 30, "the delivery to give up")
    finally:
        messenger.close(5)
    assert results == [False] and receiver.received == []
    (line,) = [json.loads(t) for t in log_text.getvalue().splitlines()
               if '"message.failed"' in t]
    assert line["to"] == "urls[0] (json://)" and "attempts: 3" in line["reason"]
    text = log_text.getvalue()
    for secret in ("pa55w0rd-secret", "tok-0123456789abcdef", url):
        assert secret not in text


@needs_apprise
def test_a_receiver_that_recovers_gets_the_message(receiver: JsonReceiver) -> None:
    """Two failed attempts, then success: delivered once, counted as sent."""
    receiver.answers = [503, 500]
    results: list[bool] = []
    messenger = messaging.Messenger(on_sent=results.append, backoff_initial_seconds=0.01,
                                    backoff_max_seconds=0.02)
    try:
        messenger.submit(NotifySettings(urls=(receiver.url(),)), transcribed(), "in")
        wait_for(lambda: results, 30, "the delivery")
    finally:
        messenger.close(5)
    assert results == [True] and len(receiver.received) == 1


def test_reading_the_config_makes_every_log_line_scrub_the_urls_secrets(
        tmp_path: Path, log_text: io.StringIO) -> None:
    """Once a config with notify is read, a log line that happens to hold a URL's password,
    token or the URL itself shows *** instead (as for the API key)."""
    url = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100200300"
    parse(_config(tmp_path, [url]), base=tmp_path)
    structlog.get_logger("test").warning("oops", detail=f"sent to {url} with token "
                                         "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw")
    text = log_text.getvalue()
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in text and "***" in text
