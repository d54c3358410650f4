"""Apprise, loaded on demand, and what may be said about a notification URL without its secrets.

Apprise is an optional dependency (the ``notify`` extra): ``load`` imports it or raises
ConfigError naming the extra. Its own log records (which may hold a URL, and so a token or a
password) never reach a handler of ours: its logger is silenced, and a failed delivery's reason
is read from a capture and redacted (``messaging``). A URL is named in logs and errors only by
its scheme (``describe``).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
import warnings
from types import ModuleType
from urllib.parse import parse_qsl, unquote

from mimo_watchd.errors import ConfigError

EXTRA = "pip install 'mimo-watchd[notify]'"
# Parts of a URL (other than its user and password) at least this long that are not a host
# name or a plain word are treated as secrets; shorter ones (a port, "mimo") are not.
SECRET_MIN_CHARS = 8
_PARTS = re.compile(r"([^/?#]*)([^?#]*)(?:\?([^#]*))?")  # netloc, path, query
_PLAIN = re.compile(r"[a-z][a-z_-]*|[\w-]+(\.[\w-]+)+")  # a word, or a host name / address
_LOADING = threading.Lock()


def available() -> bool:
    """Whether Apprise is installed."""
    return importlib.util.find_spec("apprise") is not None


def load() -> ModuleType:
    """The ``apprise`` module, its logging kept from every handler of ours; ConfigError when it
    is not installed."""
    if not available():
        raise ConfigError([f"notify needs Apprise, which is not installed: {EXTRA}"])
    quiet = logging.getLogger("apprise")
    with _LOADING:
        if not quiet.handlers:
            quiet.propagate = False
            quiet.addHandler(logging.NullHandler())
            # Apprise loads its plugins at their first use, and its mail plugin imports the
            # deprecated ``imghdr`` on Python < 3.13: load them once, that warning silenced.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import apprise

                apprise.Apprise.instantiate("json://localhost", suppress_exceptions=True)
    import apprise

    return apprise


def describe(url: str) -> str:
    """A URL as logs may name it: its scheme alone (``json://``)."""
    scheme = url.partition("://")[0] if "://" in url else "?"
    return f"{scheme}://"


def problem(url: str) -> str | None:
    """Why Apprise cannot use ``url`` (naming only its scheme), or None."""
    apprise = load()
    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        return (f"Apprise does not understand this {describe(url)} URL (an unknown scheme, or "
                "a part missing: see Apprise's documentation of that service)")
    return None


def secrets_of(url: str) -> list[str]:
    """What of ``url`` must never be logged: the URL itself, its password, and every other
    part (the user, a bare host, path segments, query values) that looks like a token: at least
    SECRET_MIN_CHARS characters, neither a host name nor a plain lower-case word (a host or a
    topic like ``transcripts`` scrubbed from every log line would only blind it). Services
    keep their tokens in any of these places (``tgram://TOKEN/CHAT``, ``slack://A/B/C``)."""
    found = {url}
    parts = _PARTS.match(url.partition("://")[2])
    assert parts is not None  # every part is optional: it always matches
    netloc, path, query = parts.groups(default="")
    userinfo, _, hostport = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if len(password) >= 4:
        found.update({userinfo, password})
    pieces = [user, *hostport.split(":"), *path.split("/"),
              *(v for _, v in parse_qsl(query))]
    found.update(p for p in pieces if len(p) >= SECRET_MIN_CHARS and not _PLAIN.fullmatch(p))
    found.update([unquote(p) for p in found])
    return sorted(p for p in found if len(p) >= 4)
