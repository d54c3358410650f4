"""A network outage: no connection to the API pauses API work, keeps files queued, resumes."""

from __future__ import annotations

import socket

import httpx
import pytest

from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings
from mimo_watchd.errors import ApiUnreachableError, TransientApiError


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_for(base_url: str) -> MimoClient:
    api = default_api_settings(base_url=base_url, max_retries=1, backoff_initial_seconds=0.01,
                               connect_timeout_seconds=2.0)
    return MimoClient(api, Secret("sk-outage-test"))


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "api.mimo-watchd-test.invalid"])
def test_no_connection_is_an_outage_that_pauses(host: str) -> None:
    """Connection refused and a name that does not resolve raise ApiUnreachableError: it
    pauses API work, names the host, and the client retried it first."""
    netloc = host.format(port=closed_port())
    client = client_for(f"http://{netloc}/v1")
    try:
        with pytest.raises(ApiUnreachableError) as info:
            client.transcribe(b"RIFF", "audio/wav", 1.0)
    finally:
        client.close()
    err = info.value
    assert err.pauses and err.host == netloc and err.attempts == 2
    assert err.reason.startswith(f"the API at {netloc} is unreachable (ConnectError: ")
    assert isinstance(err.__cause__, httpx.ConnectError)


def test_a_read_timeout_is_no_outage() -> None:
    """A host that accepts the connection but does not answer in time is a transient failure
    of this request, not an outage."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        api = default_api_settings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
                                   timeout_base_seconds=0.3, timeout_per_audio_second=0.0)
        client = MimoClient(api, Secret("sk-outage-test"))
        try:
            with pytest.raises(TransientApiError) as info:
                client.transcribe(b"RIFF", "audio/wav", 1.0)
        finally:
            client.close()
    assert not info.value.pauses
