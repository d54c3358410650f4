"""A network outage: no connection to the API pauses API work, keeps files queued, resumes."""

from __future__ import annotations

import itertools
import json
import socket
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings
from mimo_watchd.emulator import Emulator, EmulatorConfig, tones
from mimo_watchd.errors import ApiUnreachableError, TransientApiError
from tests.daemon_support import DaemonProcess, run_cli
from tests.support import Deployment, wait_for
from tests.test_operations import NotifySocket


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


@pytest.mark.e2e
def test_an_outage_keeps_files_queued_says_so_and_resumes_by_itself(tmp_path: Path) -> None:
    """With nothing listening at the API's address, files stay queued (no attempt spent, none
    failed) while the daemon probes with backoff; logs, status, /healthz and the systemd
    STATUS line name the host and since when; once the address answers, it carries on."""
    layout = Deployment(tmp_path, test_timing=True)
    port, metrics_port = closed_port(), closed_port()
    host = f"127.0.0.1:{port}"
    layout.write_config(f"http://{host}/v1", pause_probe_seconds=2.0,
                        metrics={"listen": f"127.0.0.1:{metrics_port}"})
    sock = NotifySocket(tmp_path / "notify.sock")
    d = DaemonProcess(layout, env={"NOTIFY_SOCKET": str(sock.path)})
    try:
        d.wait_ready()
        for i, word in enumerate(["alpha", "bravo"]):
            tones.write(layout.inbox / f"o{i}.wav", [word, "zulu"])
        (paused,) = wait_for(lambda: d.saw("daemon.paused"), 30, what="the pause")
        assert paused["reason"].startswith(f"the API at {host} is unreachable (ConnectError")
        wait_for(lambda: len(d.saw("pause.probe")) >= 3, 30, what="three probes")
        st = run_cli(layout, "status", "-c", str(layout.config), "--json")
        status = json.loads(st.stdout)
        assert st.returncode == 0 and status["paused"] and status["paused_since"]
        assert f"the API at {host} is unreachable" in status["paused_reason"]
        assert status["failed"] == 0 and status["queued"] + status["in_progress"] == 2
        health = httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5)
        assert health.status_code == 503
        assert health.text.startswith(f"paused since {status['paused_since']}: the API at {host}")
        wait_for(lambda: any(line.startswith("STATUS=PAUSED since") and host in line
                             for line in sock.lines()), 10, what="the STATUS line")
        assert not d.saw("job.failed") and not list(layout.failed.iterdir())
        # Probing, not hammering: the first probe a second after the pause, then each two
        # (pause_probe_seconds) after the one before ended; a probe is one file's request.
        times = [datetime.fromisoformat(e["timestamp"])
                 for e in [paused, *d.saw("pause.probe")]]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 1.0 and all(g >= 2.0 for g in gaps[1:]), gaps
        with Emulator(EmulatorConfig(port=port, latency_scale=0.0)):
            wait_for(lambda: len(layout.sidecar_docs()) == 2, 60, what="both transcribed")
        assert d.saw("daemon.resumed")
        assert {doc["transcript"] for doc in layout.sidecar_docs()} == {"alpha zulu.",
                                                                        "bravo zulu."}
        assert [doc["chunks"][0]["attempts"] for doc in layout.sidecar_docs()] == [1, 1]
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5).text == "ok\n"
    finally:
        assert d.stop() == 0, d.text()
        sock.close()
