"""An API that echoes the key in its error bodies (as OpenAI-style gateways do:
"Incorrect API key provided: sk-...") never gets it shown or stored: not in the error file,
the ledger, status.json, ``status --json``, ``check --api`` or ``transcribe`` output, nor the
log. Through the real daemon, the real CLI, and a tiny local server that echoes the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mimo_watchd.emulator import tones
from tests.api_replay import Answer, replay
from tests.daemon_support import API_KEY, DaemonProcess, run_cli
from tests.support import Deployment, wait_for

pytestmark = pytest.mark.e2e

# mimo-api.md s.4's envelope; the message is what OpenAI-style gateways say for a wrong key.
ECHO_401 = Answer(401, {"error": {
    "message": "Incorrect API key provided: {key}. Find your key in the console.",
    "param": "key {key}", "code": "401", "type": "invalid_key"}})
ECHO_400 = Answer(400, {"error": {
    "code": "400", "message": "Param Incorrect",
    "param": "request by {key} refused (sk-dae1****6789, tp-abcd1234efgh)", "type": ""}})
MASKED = ("sk-dae1****6789", "tp-abcd1234efgh")


def leaks(text: str, key: str = API_KEY) -> list[str]:
    """The secrets (the key, key-like tokens the server made up) found in ``text``."""
    return [s for s in (key, key[3:], *MASKED) if s in text]


def state_bytes(state: Path) -> str:
    """Every file of the state folder (ledger, its WAL, status.json), as one text."""
    return "".join(p.read_bytes().decode("latin-1") for p in state.rglob("*") if p.is_file())


def test_a_key_echoed_by_the_api_is_never_shown_or_stored(tmp_path: Path) -> None:
    """Paused by a 401 that echoes the key, then failed by a 400 that does: the pause reason
    (status.json, status --json, the ledger) and the failure (error file, ledger, status) say
    what happened with the key scrubbed; so do the log, check --api and transcribe."""
    layout = Deployment(tmp_path, test_timing=True)
    with replay([ECHO_401]) as api:
        layout.write_config(api.url)
        d = DaemonProcess(layout)
        try:
            d.wait_ready()
            tones.write(layout.inbox / "a.wav", ["alpha", "bravo"])
            paused = wait_for(lambda: (d.status() or {}).get("paused_reason"), 30,
                              what="the pause")
            assert "Incorrect API key provided: ***." in paused and not leaks(paused)
            st = run_cli(layout, "status", "-c", str(layout.config), "--json")
            assert st.returncode == 0 and json.loads(st.stdout)["paused"]
            assert not leaks(st.stdout + st.stderr)
            assert not leaks(state_bytes(layout.state))
            api.answer_with([ECHO_400])
            wait_for(lambda: (layout.failed / "a.error.json").exists(), 30,
                     what="the failure")
            error = (layout.failed / "a.error.json").read_text()
            assert "request by *** refused (sk-***, tp-***)" in error and not leaks(error)
            d.wait_idle()
            st = run_cli(layout, "status", "-c", str(layout.config), "--json")
            assert json.loads(st.stdout)["failed"] == 1 and not leaks(st.stdout + st.stderr)
        finally:
            assert d.stop() == 0, d.text()
        assert not leaks(state_bytes(layout.state))
        assert API_KEY in api.keys  # the server did get the key (and echoed it)
        assert not leaks(d.text())
        check = run_cli(layout, "check", "-c", str(layout.config), "--api")
        assert check.returncode != 0 and "refused (sk-***, tp-***)" in check.stderr
        assert not leaks(check.stdout + check.stderr)
        audio = tones.write(tmp_path / "b.wav", ["charlie"])
        out = run_cli(layout, "transcribe", "-c", str(layout.config), "--json", str(audio))
        assert out.returncode == 1 and "refused (sk-***, tp-***)" in out.stderr
        assert not leaks(out.stdout + out.stderr)


def test_a_key_of_any_shape_is_scrubbed(tmp_path: Path) -> None:
    """A key that does not look like one (a gateway's own format) is scrubbed all the same:
    the configured key itself is always removed."""
    layout = Deployment(tmp_path, test_timing=True)
    key = "gateway-secret-7c1e0f2a"
    with replay([ECHO_400]) as api:
        layout.write_config(api.url)
        check = run_cli(layout, "check", "-c", str(layout.config), "--api",
                        env={"MIMO_API_KEY": key})
        audio = tones.write(tmp_path / "b.wav", ["charlie"])
        out = run_cli(layout, "transcribe", "-c", str(layout.config), str(audio),
                      env={"MIMO_API_KEY": key})
    assert api.keys == [key, key]
    for r in (check, out):
        assert r.returncode != 0 and "request by *** refused" in r.stderr
        assert not leaks(r.stdout + r.stderr, key)
