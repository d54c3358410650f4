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
import threading
import warnings
from types import ModuleType
from urllib.parse import parse_qsl, unquote, urlsplit

from mimo_watchd.errors import ConfigError

EXTRA = "pip install 'mimo-watchd[notify]'"
# Parts of a URL at least this long are treated as secrets (tokens, passwords, keys); shorter
# ones (a port, "general", a topic like "mimo") would only scramble ordinary log text.
SECRET_MIN_CHARS = 6
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
    """What of ``url`` must never be logged: the URL itself and each part of it (user,
    password, host, port: services put tokens in any of them; path segments, query values) of
    at least SECRET_MIN_CHARS characters,
    as written and unquoted; most services keep their token in one of these."""
    found = {url}
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.replace("@", ":").split(":")
        pieces = [parts.netloc, *netloc, *parts.path.split("/"),
                  *(v for _, v in parse_qsl(parts.query))]
    except ValueError:
        pieces = [url.partition("://")[2]]
    for piece in pieces:
        if piece:
            found.update({piece, unquote(piece)})
    return sorted(p for p in found if len(p) >= SECRET_MIN_CHARS)
