"""Every httpx exception has a decided translation; the ones that matter are the right error,
through the real client where the failure can be made real."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings
from mimo_watchd.errors import (
    ApiError,
    ApiUnreachableError,
    OperatorError,
    PermanentApiError,
    TransientApiError,
)
from mimo_watchd.httperrors import TABLE, translated


def subclasses(cls: type[Exception]) -> set[type[Exception]]:
    """``cls`` and every class below it, recursively."""
    found = {cls}
    for sub in cls.__subclasses__():
        found |= subclasses(sub)
    return found


HTTPX_ERRORS = sorted((c for c in subclasses(httpx.HTTPError) if c.__module__.startswith("httpx")),
                      key=lambda c: c.__name__)


def instance(cls: type[Exception]) -> Exception:
    """An instance of an httpx exception, built as httpx builds it."""
    request = httpx.Request("POST", "https://api.example/v1/chat/completions")
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("boom", request=request, response=httpx.Response(503, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=request)
    return cls("boom")


def test_every_httpx_error_has_its_own_row() -> None:
    """Walking httpx's exception tree finds no class without a decided translation."""
    assert len(HTTPX_ERRORS) >= 20  # the walk found the tree (httpx 0.28 has 22)
    missing = [c.__name__ for c in HTTPX_ERRORS if c not in TABLE]
    assert not missing, f"httpx errors without a row in httperrors.TABLE: {missing}"


@pytest.mark.parametrize("cls", HTTPX_ERRORS, ids=lambda c: c.__name__)
def test_every_httpx_error_becomes_an_api_error(cls: type[Exception]) -> None:
    """Each one translates to an ApiError that says what it was."""
    error = translated(instance(cls), "api.example")  # type: ignore[arg-type]
    assert isinstance(error, ApiError) and error.reason


@pytest.mark.parametrize(("cls", "expected", "pauses"), [
    (httpx.ConnectError, ApiUnreachableError, True),
    (httpx.ConnectTimeout, ApiUnreachableError, True),
    (httpx.ProxyError, ApiUnreachableError, True),
    (httpx.ReadTimeout, TransientApiError, False),
    (httpx.RemoteProtocolError, TransientApiError, False),
    (httpx.DecodingError, TransientApiError, False),
    (httpx.UnsupportedProtocol, OperatorError, True),
    (httpx.InvalidURL, OperatorError, True),
    (httpx.TooManyRedirects, OperatorError, True),
    (httpx.LocalProtocolError, OperatorError, True),
])
def test_what_each_failure_leads_to(cls: type[Exception], expected: type[ApiError],
                                    pauses: bool) -> None:
    """No connection pauses as an outage; an unusable URL, a redirect or an unwritable request
    pauses as a configuration problem; what broke on the way is retried."""
    error = translated(instance(cls), "api.example")  # type: ignore[arg-type]
    assert type(error) is expected and error.pauses is pauses
    assert error.retryable is (expected is not OperatorError)


def test_a_status_error_is_classified_by_its_status() -> None:
    """HTTPStatusError (raise_for_status) maps as its status would."""
    error = translated(instance(httpx.HTTPStatusError), "api.example")  # type: ignore[arg-type]
    assert isinstance(error, TransientApiError) and error.status == 503


def client(base_url: str, **api: Any) -> MimoClient:
    return MimoClient(default_api_settings(base_url=base_url, max_retries=3,
                                           backoff_initial_seconds=0.01, **api),
                      Secret("sk-httperrors-test"))


@pytest.mark.parametrize("base_url", ["htps://api.xiaomimimo.com/v1",
                                      "api.xiaomimimo.com/v1",
                                      "http://127.0.0.1:80O0/v1"])
def test_a_mistyped_base_url_pauses_at_once(base_url: str) -> None:
    """A base_url httpx cannot use is a configuration error, raised at once, not retried."""
    c = client(base_url)
    try:
        with pytest.raises(OperatorError, match=r"api\.base_url") as info:
            c.transcribe(b"RIFF", "audio/wav", 1.0)
    finally:
        c.close()
    assert info.value.attempts == 1 and info.value.pauses
    assert isinstance(info.value.__cause__, httpx.UnsupportedProtocol | httpx.InvalidURL)


def test_an_undecodable_answer_is_retried() -> None:
    """An answer whose Content-Encoding does not decode is transient, retried, then raised."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    c = MimoClient(default_api_settings(base_url="http://api.example/v1", max_retries=1,
                                        backoff_initial_seconds=0.01),
                   Secret("sk-httperrors-test"), transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(TransientApiError, match="could not be decoded") as info:
            c.transcribe(b"RIFF", "audio/wav", 1.0)
    finally:
        c.close()
    assert len(calls) == 2 and info.value.attempts == 2
    assert isinstance(info.value.__cause__, httpx.DecodingError)


def test_a_redirect_pauses_and_says_where() -> None:
    """A 301/308 (http to https, a moved path) is no transcript and no file's fault."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://api.example/v1/chat/completions"})

    c = MimoClient(default_api_settings(base_url="http://api.example/v1"),
                   Secret("sk-httperrors-test"), transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(OperatorError, match=r"redirects to https://api\.example") as info:
            c.transcribe(b"RIFF", "audio/wav", 1.0)
    finally:
        c.close()
    assert not isinstance(info.value, PermanentApiError) and info.value.attempts == 1
