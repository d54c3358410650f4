"""What of a notification URL counts as a secret: passwords and tokens, not host names or
plain words (which would only blind the logs)."""

from __future__ import annotations

import pytest

from mimo_watchd import notifyurls


@pytest.mark.parametrize(("url", "secret", "not_secret"), [
    ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100200300",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "tgram"),
    ("json://mimo:pa55w0rd@127.0.0.1:8080/hook/tok-0123456789abcdef", "pa55w0rd", "127.0.0.1"),
    ("json://mimo:pa55w0rd@127.0.0.1:8080/hook/tok-0123456789abcdef", "tok-0123456789abcdef",
     "mimo"),
    ("mailto://user:app-pass-word@mail.example.com?to=me@example.com", "app-pass-word",
     "mail.example.com"),
    ("ntfys://ntfy.example.com/transcripts", "ntfys://ntfy.example.com/transcripts",
     "transcripts"),
])
def test_passwords_and_tokens_are_secrets_hosts_and_words_are_not(
        url: str, secret: str, not_secret: str) -> None:
    """Each URL's password or token is registered; its host, user name and plain words are
    left for the logs to use; the scheme alone names the URL."""
    found = notifyurls.secrets_of(url)
    assert secret in found and not_secret not in found
    assert notifyurls.describe(url) == url.partition("://")[0] + "://"
