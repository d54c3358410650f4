"""httpx's exceptions as ``mimo_watchd.errors``: one table, ending in a catch-all.

The client translates here and nowhere else (``MimoClient._once``). Every subclass of
``httpx.HTTPError`` has its own row, so a decision is made for each one rather than inherited
by accident; ``tests/test_httperrors.py`` walks httpx's exception tree and fails on any class
without a row (a newer httpx adding one must be decided on, not let through).

What each kind of failure leads to (``errors.py``): no connection at all is an outage that
pauses API work (``ApiUnreachableError``); a URL that cannot be used, a redirect or a request
that cannot even be written is a configuration problem that pauses it too (``OperatorError``:
retrying would fail the same way, failing the file would blame the recording); everything
else that went wrong on the way is transient, retried with backoff.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from mimo_watchd.errors import ApiError, ApiUnreachableError, OperatorError, TransientApiError
from mimo_watchd.protocol import classify

Translation = Callable[[Exception, str], ApiError]


def _named(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _unreachable(exc: Exception, host: str) -> ApiError:
    # No connection at all: an outage (DNS, refused, proxy down), not this request's.
    return ApiUnreachableError(host, _named(exc))


def _timed_out(exc: Exception, host: str) -> ApiError:
    return TransientApiError(f"timed out ({type(exc).__name__})")


def _broken(exc: Exception, host: str) -> ApiError:
    return TransientApiError(f"connection failed: {_named(exc)}")


def _undecodable(exc: Exception, host: str) -> ApiError:
    return TransientApiError(f"the answer could not be decoded ({_named(exc)})")


def _bad_url(exc: Exception, host: str) -> ApiError:
    return OperatorError(f"the API's URL cannot be used ({_named(exc)}): correct api.base_url")


def _redirected(exc: Exception, host: str) -> ApiError:
    return OperatorError(f"the API at {host} redirects ({_named(exc)}): correct api.base_url")


def _unsendable(exc: Exception, host: str) -> ApiError:
    # h11 refused to write the request: an invalid header value (a key with a line break, an
    # odd character) would fail every request the same way.
    return OperatorError(f"the request to {host} could not be written ({_named(exc)}): check "
                         "the API key and the api settings")


def _status(exc: Exception, host: str) -> ApiError:
    # Only raise_for_status raises it (the client never calls it): classified by its status.
    status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 500
    return classify(status, "")


def _unexpected(exc: Exception, host: str) -> ApiError:
    return TransientApiError(f"HTTP client error: {_named(exc)}")


# Most specific first; ``translated`` uses the row of the nearest class in the exception's MRO.
TABLE: dict[type[Exception], Translation] = {
    httpx.ConnectTimeout: _unreachable,
    httpx.ConnectError: _unreachable,
    httpx.ProxyError: _unreachable,
    httpx.ReadTimeout: _timed_out,
    httpx.WriteTimeout: _timed_out,
    httpx.PoolTimeout: _timed_out,
    httpx.TimeoutException: _timed_out,
    httpx.ReadError: _broken,
    httpx.WriteError: _broken,
    httpx.CloseError: _broken,
    httpx.NetworkError: _broken,
    httpx.RemoteProtocolError: _broken,
    httpx.LocalProtocolError: _unsendable,
    httpx.ProtocolError: _broken,
    httpx.UnsupportedProtocol: _bad_url,
    httpx.InvalidURL: _bad_url,  # not an HTTPError: raised while the request is built
    httpx.TransportError: _broken,
    httpx.DecodingError: _undecodable,
    httpx.TooManyRedirects: _redirected,
    httpx.RequestError: _broken,
    httpx.HTTPStatusError: _status,
    httpx.HTTPError: _unexpected,  # the catch-all
}


def translated(exc: httpx.HTTPError | httpx.InvalidURL, host: str) -> ApiError:
    """The error ``exc`` stands for, for a request to ``host`` (raise it ``from exc``)."""
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls](exc, host)
    return _unexpected(exc, host)
