"""Prometheus metrics and the /metrics + /healthz endpoint, scraped over real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimo_watchd.errors import ConfigError
from mimo_watchd.metrics import Metrics, MetricsServer, parse_listen, serve

USAGE = {"completion_tokens": 20, "prompt_tokens": 46, "total_tokens": 66, "seconds": 4,
         "prompt_tokens_details": {"audio_tokens": 25, "cached_tokens": 45}}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Health:
    """A switchable health check, as the daemon would provide."""

    def __init__(self) -> None:
        self.state: tuple[bool, str] = (True, "")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def server(health: Health) -> Iterator[tuple[MetricsServer, Metrics]]:
    metrics = Metrics()
    srv = serve("127.0.0.1:0", metrics, health)
    try:
        yield srv, metrics
    finally:
        srv.stop()


def scrape(srv: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(srv.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def test_fresh_metrics_have_zero_series(server: tuple[MetricsServer, Metrics]) -> None:
    """Before any event the labelled series exist at 0, so alerts and rate() work at once."""
    srv, _ = server
    s = scrape(srv)
    for outcome in ("done", "failed", "duplicate", "skipped"):
        assert s[("mimo_watchd_files_total", (("outcome", outcome),))] == 0
    for kind in ("prompt", "completion", "audio"):
        assert s[("mimo_watchd_tokens_total", (("kind", kind),))] == 0
    assert s[("mimo_watchd_hook_failures_total", (("hook", "webhook"),))] == 0
    assert s[("mimo_watchd_paused", ())] == 0
    assert s[("mimo_watchd_build_info", (("version", "0.1.0"),))] == 1
    assert ("process_resident_memory_bytes", ()) in s


def test_events_show_in_a_scrape(server: tuple[MetricsServer, Metrics]) -> None:
    """Jobs, API answers, usage, queue, pause and hook failures are all exposed."""
    srv, m = server
    m.observe_api(200, USAGE)
    m.observe_api(429, retry=True)
    m.observe_api("timeout", retry=True)
    m.observe_api(200, {"seconds": 300, "prompt_tokens": 1900, "completion_tokens": 700,
                        "audio_tokens": 1875})
    m.observe_job("done", 12.5)
    m.observe_job("failed", 3.0)
    m.observe_job("duplicate")
    m.set_queue(7, 2)
    m.set_paused(True)
    m.observe_hook_failure("webhook")
    s = scrape(srv)
    assert s[("mimo_watchd_api_requests_total", (("status", "200"),))] == 2
    assert s[("mimo_watchd_api_requests_total", (("status", "429"),))] == 1
    assert s[("mimo_watchd_api_requests_total", (("status", "timeout"),))] == 1
    assert s[("mimo_watchd_api_retries_total", ())] == 2
    assert s[("mimo_watchd_billed_seconds_total", ())] == 304
    assert s[("mimo_watchd_tokens_total", (("kind", "prompt"),))] == 1946
    assert s[("mimo_watchd_tokens_total", (("kind", "completion"),))] == 720
    assert s[("mimo_watchd_tokens_total", (("kind", "audio"),))] == 1900
    assert s[("mimo_watchd_files_total", (("outcome", "done"),))] == 1
    assert s[("mimo_watchd_files_total", (("outcome", "duplicate"),))] == 1
    assert s[("mimo_watchd_processing_seconds_count", ())] == 2
    assert s[("mimo_watchd_processing_seconds_bucket", (("le", "5.0"),))] == 1
    assert s[("mimo_watchd_processing_seconds_bucket", (("le", "20.0"),))] == 2
    assert s[("mimo_watchd_queue_depth", ())] == 7
    assert s[("mimo_watchd_in_progress", ())] == 2
    assert s[("mimo_watchd_paused", ())] == 1
    assert s[("mimo_watchd_last_success_timestamp_seconds", ())] > 1.7e9
    assert s[("mimo_watchd_hook_failures_total", (("hook", "webhook"),))] == 1


def test_histogram_reaches_hours() -> None:
    """A long recording's processing time lands in a finite bucket, not only +Inf."""
    m = Metrics()
    m.observe_job("done", 45 * 60)
    s = samples(m.render().decode())
    assert s[("mimo_watchd_processing_seconds_bucket", (("le", "3600.0"),))] == 1


def test_odd_usage_values_are_ignored() -> None:
    """Missing, negative or non-numeric usage fields never raise into the worker."""
    m = Metrics()
    m.observe_api(200, {"seconds": -1, "prompt_tokens": "many", "completion_tokens": None,
                        "prompt_tokens_details": "n/a", "total_tokens": True})
    s = samples(m.render().decode())
    assert s[("mimo_watchd_billed_seconds_total", ())] == 0
    assert s[("mimo_watchd_tokens_total", (("kind", "prompt"),))] == 0


def test_registries_are_independent() -> None:
    """Two Metrics objects never share counts (and never clash on registration)."""
    a, b = Metrics(), Metrics()
    a.observe_job("done", 1.0)
    assert samples(b.render().decode())[("mimo_watchd_files_total", (("outcome", "done"),))] == 0


def test_healthz_follows_the_health_check(
    server: tuple[MetricsServer, Metrics], health: Health
) -> None:
    """/healthz says 200 ok while healthy and 503 with the reason otherwise."""
    srv, _ = server
    ok = httpx.get(srv.url + "/healthz")
    assert (ok.status_code, ok.text) == (200, "ok\n")
    health.state = (False, "paused: API key rejected (401)")
    bad = httpx.get(srv.url + "/healthz")
    assert (bad.status_code, bad.text) == (503, "paused: API key rejected (401)\n")


def test_healthz_when_the_check_raises(health: Health) -> None:
    """A health check that raises is reported as 503, and the server keeps serving."""
    def broken() -> tuple[bool, str]:
        raise RuntimeError("ledger closed")

    with serve(":0", Metrics(), broken) as srv:
        r = httpx.get(srv.url + "/healthz")
        assert r.status_code == 503 and "ledger closed" in r.text
        assert httpx.get(srv.url + "/metrics").status_code == 200


def test_unknown_path_is_404(server: tuple[MetricsServer, Metrics]) -> None:
    """Anything but /metrics and /healthz is not found."""
    srv, _ = server
    assert httpx.get(srv.url + "/").status_code == 404


def test_default_host_is_loopback(health: Health) -> None:
    """A bare port binds 127.0.0.1 only."""
    with serve("0", Metrics(), health) as srv:
        assert srv.host == "127.0.0.1" and srv.port > 0
        assert httpx.get(f"http://127.0.0.1:{srv.port}/healthz").status_code == 200


def test_ipv6_loopback(health: Health) -> None:
    """A bracketed IPv6 host is served over IPv6."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = serve("[::1]:0", Metrics(), health)
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    with srv:
        assert srv.url.startswith("http://[::1]:")
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_stop_releases_the_port(health: Health) -> None:
    """After stop() the port refuses connections, the serving thread is gone, and a new server
    can listen on the same port."""
    before = set(threading.enumerate())
    srv = serve("127.0.0.1:0", Metrics(), health)
    port = srv.port
    assert httpx.get(srv.url + "/healthz").status_code == 200
    srv.stop()
    assert [t for t in threading.enumerate() if t.name == "metrics-http" and t not in before] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    with serve(f"127.0.0.1:{port}", Metrics(), health) as again:
        assert again.port == port
        assert httpx.get(again.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    """host:port forms, with 127.0.0.1 as the default host."""
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["", "host:", "host:http", "1.2.3.4:70000", "::1:9464"])
def test_parse_listen_rejects(listen: str) -> None:
    """A malformed address is a ConfigError naming metrics.listen."""
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        parse_listen(listen)
