"""The watched tree as a boundary, through the real daemon and the real emulator: symlink
swaps (issue 12 item 1), names that are not UTF-8 (item 8), recordings replaced in flight
(item 9), daemons and watches sharing one processed folder (item 10), same-stem recordings
(issue 11 item 10)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import DaemonProcess
from tests.support import Deployment, wait_for

pytestmark = pytest.mark.e2e

PRIVATE_WORDS = ["scarlet", "scarlet", "ivory"]  # no test file below says "scarlet"


def words_for(i: int) -> list[str]:
    """Words unique to ``i`` < 1296 that never include "scarlet"."""
    return [tones.WORDS[i % 36], tones.WORDS[(i // 36) % 36], "zulu"]


def text_for(i: int) -> str:
    return " ".join(words_for(i)) + "."


def make_audio(path: Path, i: int, fmt: str = "wav") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tones.write(path, words_for(i), fmt, word_seconds=0.2, gap_seconds=0.1)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def consistent_sets(processed: Path) -> dict[str, str]:
    """Checks every JSON sidecar in ``processed`` against the audio it names (which exists,
    has the hash the sidecar states) and its .txt (the same transcript); returns audio path
    -> transcript."""
    found: dict[str, str] = {}
    for js in processed.rglob("*.json"):
        doc = json.loads(js.read_text())
        audio = Path(doc["source"]["path"])
        assert audio.is_file() and sha(audio) == doc["source"]["sha256"], (js, doc["source"])
        assert js.with_suffix(".txt").read_text() == doc["transcript"] + "\n", js
        assert str(audio) not in found, f"two transcripts name {audio}"
        found[str(audio)] = doc["transcript"]
    return found


@pytest.fixture
def layout(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path / "deploy", test_timing=True)


def test_symlink_swaps_after_queueing_read_and_send_nothing(
        emu: Emulator, layout: Deployment, tmp_path: Path) -> None:
    """``sub/`` swapped for a symlink to a private folder, and ``a.wav`` for a symlink to a
    private file, after both were queued (the daemon paused by a 401): nothing private is
    sent, nothing is linked into processed or moved, and the daemon carries on."""
    private = tmp_path / "private"
    secret = make_private(private / "b.wav")
    make_private(private / "secret.wav")
    before = {p.name: p.read_bytes() for p in private.iterdir()}
    emu.add_fault(FaultRule("401", times=100_000))
    make_audio(layout.inbox / "a.wav", 1)
    make_audio(layout.inbox / "sub" / "b.wav", 2)
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        wait_for(lambda: d.saw("daemon.paused") and layout.ledger_counts().get("QUEUED") == 2,
                 30, what="both files queued while paused")
        (layout.inbox / "sub").rename(tmp_path / "sub-moved-away")
        (layout.inbox / "sub").symlink_to(private)
        (layout.inbox / "a.wav").unlink()
        (layout.inbox / "a.wav").symlink_to(secret.parent / "secret.wav")
        calls = emu.calls
        emu.reset()
        make_audio(layout.inbox / "c.wav", 3)
        wait_for(lambda: (layout.processed / "c.txt").exists(), 30, what="the daemon to go on")
        d.wait_idle()
    finally:
        assert d.stop() == 0, d.text()
    calls += emu.calls
    assert all("scarlet" not in c.words for c in calls), [c.words for c in calls]
    assert {p.name: p.read_bytes() for p in private.iterdir()} == before
    assert sorted(p.name for p in layout.processed.rglob("*")) == ["c.json", "c.txt", "c.wav"]
    assert not any(layout.failed.iterdir())
    assert (layout.inbox / "a.wav").is_symlink() and (layout.inbox / "sub").is_symlink()
    reasons = [e["reason"] for e in d.saw("job.vanished")]
    assert len(reasons) == 2 and all("symlink" in r for r in reasons), reasons


def make_private(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tones.write(path, PRIVATE_WORDS, word_seconds=0.2, gap_seconds=0.1)


@pytest.mark.parametrize("how", ["rename-over", "rewrite-in-place"])
def test_a_recording_replaced_in_flight_never_sits_beside_the_wrong_transcript(
        emu: Emulator, layout: Deployment, how: str) -> None:
    """``a.wav`` replaced while its predecessor is being transcribed (a slow answer): every
    transcript in processed sits beside the audio it was made from, the new recording is
    transcribed and kept, and (renamed over) the old recording is kept too."""
    emu.add_fault(FaultRule("slow", when_word=words_for(11)[0], delay=3.0))
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        old = make_audio(layout.root / "old.wav", 11).read_bytes()
        new = make_audio(layout.root / "new.wav", 12).read_bytes()
        os.rename(layout.root / "old.wav", layout.inbox / "a.wav")
        wait_for(lambda: emu.in_flight() == 1, 30, what="the old recording's request")
        if how == "rename-over":
            os.rename(layout.root / "new.wav", layout.inbox / "a.wav")
        else:
            with open(layout.inbox / "a.wav", "r+b") as fh:
                fh.write(new)
                fh.truncate()
        wait_for(lambda: text_for(12) in consistent_sets(layout.processed).values(), 30,
                 what="the new recording's transcript")
        d.wait_idle()
    finally:
        assert d.stop() == 0, d.text()
    sets = consistent_sets(layout.processed)
    audio = {hashlib.sha256(p.read_bytes()).hexdigest() for p in layout.processed_audio()}
    if how == "rename-over":
        assert sorted(sets.values()) == [text_for(11), text_for(12)]
        assert audio == {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    else:
        assert list(sets.values()) == [text_for(12)]
        assert audio == {hashlib.sha256(new).hexdigest()}
        assert any("rewritten" in e["reason"] for e in d.saw("job.vanished"))
    assert not any(layout.inbox.iterdir()) and not any(layout.failed.iterdir())


def test_watches_and_daemons_sharing_a_processed_folder_never_overwrite(
        emu: Emulator, tmp_path: Path) -> None:
    """Two watches of one daemon and a second daemon, all moving into one processed folder,
    receive the same 8 names at once: 24 recordings, each beside its own transcript, none
    overwritten, none failed, each paid once."""
    shared = tmp_path / "shared-processed"
    one = Deployment(tmp_path / "one", test_timing=True)
    two = Deployment(tmp_path / "two", test_timing=True)
    second_inbox = tmp_path / "one" / "inbox2"
    second_inbox.mkdir()
    one.write_config(emu.url, watch={"processed_dir": str(shared)}, extra_watches=[{
        "path": str(second_inbox), "processed_dir": str(shared),
        "failed_dir": str(one.failed), "settle_seconds": 0.5}])
    two.write_config(emu.url, watch={"processed_dir": str(shared)})
    daemons = [DaemonProcess(one), DaemonProcess(two)]
    inboxes = [one.inbox, second_inbox, two.inbox]
    try:
        for d in daemons:
            d.wait_ready()
        staged = [[make_audio(tmp_path / "stage" / f"{k}-{n}.wav", 100 + 10 * k + n)
                   for n in range(8)] for k in range(3)]
        for n in range(8):
            for k, inbox in enumerate(inboxes):
                os.rename(staged[k][n], inbox / f"call{n}.wav")
        wait_for(lambda: one.finished() + two.finished() == 24, 90, what="24 files")
        for d in daemons:
            d.wait_idle()
    finally:
        for d in daemons:
            assert d.stop() == 0, d.text()
    sets = consistent_sets(shared)
    assert sorted(sets.values()) == sorted(text_for(100 + 10 * k + n)
                                           for k in range(3) for n in range(8))
    assert len(list(shared.glob("*.wav"))) == 24
    assert not one.failed_errors() and not two.failed_errors()
    assert set(Counter(c.audio_sha256 for c in emu.calls if c.ok).values()) == {1}


def test_same_stem_recordings_keep_their_names(emu: Emulator, layout: Deployment) -> None:
    """``tones.wav`` and ``tones.mp3`` in one folder: both keep their audio names; one gets
    ``tones.txt``, the other's sidecars keep the extension (issue 11 item 10)."""
    make_audio(layout.inbox / "tones.wav", 21)
    make_audio(layout.inbox / "tones.mp3", 22, "mp3")
    layout.write_config(emu.url)
    d = DaemonProcess(layout, once=True)
    assert d.wait(60) == 0, d.text()
    sets = consistent_sets(layout.processed)
    assert sorted(Path(p).name for p in sets) == ["tones.mp3", "tones.wav"]
    sidecars = sorted(p.name for p in layout.processed.glob("*.json"))
    assert sidecars in (["tones.json", "tones.mp3.json"], ["tones.json", "tones.wav.json"])


BAD = os.fsdecode(b"\xff\xfe.wav")  # not UTF-8: a str holding the raw bytes (surrogateescape)


class Receiver(http.server.BaseHTTPRequestHandler):
    """Keeps the bodies POSTed to it (a webhook's receiving end)."""

    bodies: ClassVar[list[bytes]]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    """A local webhook receiver: its URL and the bodies it received."""
    bodies: list[bytes] = []
    handler = type("Handler", (Receiver,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


HOOK = """import os, sys
with open(sys.argv[1], "ab") as out:
    out.write(repr((os.fsencode(sys.argv[3]), os.environb[b"MIMO_WATCHD_AUDIO"],
                    os.environb[b"MIMO_WATCHD_SOURCE"])).encode() + b"\\n")
"""


def hooks_config(layout: Deployment, url: str) -> dict[str, Any]:
    script = layout.root / "hook.py"
    script.write_text(HOOK)
    return {"on_success": {"command": [sys.executable, str(script), str(layout.root / "ran")],
                           "webhook": url}}


def check_bad_name(layout: Deployment, d: DaemonProcess, bodies: list[bytes]) -> None:
    """The recording named b'\\xff\\xfe.wav' went through everything with its bytes intact."""
    processed = os.fsencode(layout.processed)
    assert b"\xff\xfe.wav" in os.listdir(processed) and b"\xff\xfe.json" in os.listdir(processed)
    doc = json.loads((layout.processed / os.fsdecode(b"\xff\xfe.json")).read_bytes())
    assert os.fsencode(doc["source"]["path"]) == processed + b"/\xff\xfe.wav"
    assert os.fsencode(doc["source"]["original_path"]) == os.fsencode(layout.inbox) + \
        b"/\xff\xfe.wav"
    assert doc["transcript"] == text_for(999)
    (line,) = [e for e in d.saw("job.done") if e["path"].endswith(BAD)]
    assert os.fsencode(line["dest"]) == processed + b"/\xff\xfe.wav"
    ran = {eval(x)[0]: eval(x) for x in (layout.root / "ran").read_text().splitlines()}
    audio = processed + b"/\xff\xfe.wav"
    assert ran[audio] == (audio, audio, os.fsencode(layout.inbox) + b"/\xff\xfe.wav")
    posted = [json.loads(b) for b in bodies]
    assert [os.fsencode(p["source"]["path"]) for p in posted].count(audio) == 1


def test_a_name_that_is_not_utf8_in_a_backlog_stops_nothing(
        emu: Emulator, layout: Deployment, webhook: tuple[str, list[bytes]]) -> None:
    """30 good files and ``b'\\xff\\xfe.wav'`` waiting at start: all 31 are transcribed; the
    odd name round-trips through the ledger, logs, sidecar JSON, command hook and webhook."""
    url, bodies = webhook
    for i in range(30):
        make_audio(layout.inbox / f"good{i:02d}.wav", i)
    make_audio(layout.inbox / BAD, 999)
    layout.write_config(emu.url, watch=hooks_config(layout, url))
    d = DaemonProcess(layout, once=True)
    assert d.wait(120) == 0, d.text()
    assert layout.ledger_counts() == {"DONE": 31}
    assert sorted(consistent_sets(layout.processed).values()) == sorted(
        [text_for(i) for i in range(30)] + [text_for(999)])
    wait_for(lambda: len(bodies) == 31, 30, what="31 webhook deliveries")
    check_bad_name(layout, d, bodies)


def test_a_name_that_is_not_utf8_arriving_while_running_stops_nothing(
        emu: Emulator, layout: Deployment, webhook: tuple[str, list[bytes]]) -> None:
    """The same name dropped among others into a running daemon: every file is transcribed,
    and the daemon keeps taking files after it."""
    url, bodies = webhook
    layout.write_config(emu.url, watch=hooks_config(layout, url))
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        make_audio(layout.inbox / "before.wav", 40)
        make_audio(layout.inbox / BAD, 999)
        make_audio(layout.inbox / "sub" / os.fsdecode(b"caf\xe9.wav"), 41)
        wait_for(lambda: layout.finished() == 3, 60, what="the first three files")
        make_audio(layout.inbox / "after.wav", 42)
        wait_for(lambda: layout.finished() == 4, 30, what="a file after them")
        wait_for(lambda: len(bodies) == 4, 30, what="4 webhook deliveries")
        d.wait_idle()
    finally:
        assert d.stop() == 0, d.text()
    assert layout.ledger_counts() == {"DONE": 4}
    assert sorted(consistent_sets(layout.processed).values()) == sorted(
        [text_for(40), text_for(41), text_for(42), text_for(999)])
    assert b"caf\xe9.wav" in os.listdir(os.fsencode(layout.processed / "sub"))
    check_bad_name(layout, d, bodies)
