"""The daemon as a real process: arrivals, exactly-once, crashes, faults, bad input, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mimo_watchd.emulator import Emulator, FaultRule, tones
from tests.daemon_support import API_KEY, DaemonProcess, run_cli
from tests.support import MAX_BURST_FILES, Deployment, burst_to_overflow, wait_for

pytestmark = pytest.mark.e2e

V = tones.WORDS


def words_for(i: int) -> list[str]:
    """A word sequence unique to ``i`` (so every test file has distinct content)."""
    n = len(V)
    return [V[i % n], V[(i // n) % n], V[(i // (n * n)) % n], "zulu"]


def text_for(i: int) -> str:
    return " ".join(words_for(i)) + "."


def make_audio(path: Path, i: int, fmt: str = "wav") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tones.write(path, words_for(i), fmt, word_seconds=0.2, gap_seconds=0.1)


@pytest.fixture
def layout(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path, test_timing=True)


@pytest.fixture
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("source")


def successful_by_sha(emu: Emulator) -> Counter[str]:
    return Counter(c.audio_sha256 for c in emu.calls if c.ok)


def done_texts(layout: Deployment) -> Counter[str]:
    return Counter(d["transcript"] for d in layout.sidecar_docs())


def test_once_processes_backlog_and_restart_pays_nothing(emu: Emulator, layout: Deployment) -> None:
    """--once handles every file present; a second run with everything done makes 0 calls."""
    for i in range(6):
        make_audio(layout.inbox / f"f{i}.wav", i)
    sub = layout.inbox / "a" / "b"
    sub.mkdir(parents=True)
    make_audio(sub / "deep.mp3", 6, "mp3")
    layout.write_config(emu.url)
    d = DaemonProcess(layout, once=True)
    assert d.wait(60) == 0, d.text()
    assert len(emu.calls) == 7
    assert done_texts(layout) == Counter(text_for(i) for i in range(7))
    assert (layout.processed / "a" / "b" / "deep.mp3").exists()
    assert (layout.processed / "a" / "b" / "deep.txt").read_text() == text_for(6) + "\n"
    assert not any(p.is_file() for p in layout.inbox.rglob("*"))
    doc = json.loads((layout.processed / "f0.json").read_text())
    assert doc["schema"] == "mimo-watchd/transcript@1"
    assert doc["usage"]["seconds"] >= 1 and doc["chunks"][0]["request_id"]
    assert doc["source"]["original_path"] == str(layout.inbox / "f0.wav")
    lines = d.saw("job.done")
    assert len(lines) == 7 and all("billed_seconds" in e and "latency_seconds" in e
                                   for e in lines)
    d2 = DaemonProcess(layout, once=True)
    assert d2.wait(60) == 0
    assert len(emu.calls) == 7


ARRIVALS = ["cp", "mv", "rsync", "rsync-inplace", "rsync-tempdir", "rsync-a-old-mtime",
            "syncthing", "part", "filepart", "crdownload", "slow-writer", "open-then-wait"]


def arrive(how: str, src: Path, inbox: Path, name: str, scratch: Path) -> None:
    """Delivers ``src`` into ``inbox/name`` the way a real sender would."""
    dest = inbox / name
    if how == "cp":
        subprocess.run(["cp", str(src), str(dest)], check=True)
    elif how == "mv":
        tmp = scratch / name
        shutil.copy(src, tmp)
        subprocess.run(["mv", str(tmp), str(dest)], check=True)
    elif how.startswith("rsync"):
        args = {"rsync": [], "rsync-inplace": ["--inplace"],
                "rsync-tempdir": [f"--temp-dir={scratch}"], "rsync-a-old-mtime": ["-a"]}[how]
        if how == "rsync-a-old-mtime":
            os.utime(src, (time.time() - 86400 * 30, time.time() - 86400 * 30))
        subprocess.run(["rsync", *args, str(src), str(dest)], check=True)
    elif how == "syncthing":
        tmp = inbox / f".syncthing.{name}.tmp"
        _slow_copy(src, tmp, pause=0.3)
        os.rename(tmp, dest)
    elif how in ("part", "filepart", "crdownload"):
        tmp = inbox / f"{name}.{how}"
        _slow_copy(src, tmp, pause=0.3)
        os.rename(tmp, dest)
    elif how == "slow-writer":
        _slow_copy(src, dest, pause=1.2)  # pauses longer than settle_seconds (0.5)
    elif how == "open-then-wait":
        with open(dest, "wb") as fh:
            fh.write(src.read_bytes()[:100])
            fh.flush()
            time.sleep(1.5)
            fh.write(src.read_bytes()[100:])
    else:
        raise AssertionError(how)


def _slow_copy(src: Path, dest: Path, pause: float) -> None:
    data = src.read_bytes()
    with open(dest, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
        time.sleep(pause)
        fh.write(data[len(data) // 2:])


def test_arrival_matrix_each_file_once(emu: Emulator, layout: Deployment, source: Path) -> None:
    """Every real arrival protocol yields exactly one call per file and never a temp name."""
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install rsync; .ci/run installs it)")
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    scratch = source / "scratch"
    scratch.mkdir()
    try:
        for i, how in enumerate(ARRIVALS):
            src = make_audio(source / f"src{i}.wav", 100 + i)
            arrive(how, src, layout.inbox, f"{how}.wav", scratch)
        # A directory of 50 nested files moved in at once.
        tree = scratch / "batch"
        for j in range(50):
            make_audio(tree / f"d{j % 5}" / f"n{j}.wav", 200 + j)
        os.rename(tree, layout.inbox / "batch")
        expected = len(ARRIVALS) + 50
        wait_for(lambda: len(layout.sidecar_docs()) >= expected, 90, what="all transcribed")
        d.wait_idle()  # from here anything late would show as an extra call
    finally:
        assert d.stop() == 0, d.text()
    per_content = successful_by_sha(emu)
    assert len(per_content) == expected and set(per_content.values()) == {1}
    assert len(emu.calls) == expected
    assert done_texts(layout) == Counter([text_for(100 + i) for i in range(len(ARRIVALS))] +
                                         [text_for(200 + j) for j in range(50)])
    names = {p.name for p in layout.processed_audio()}
    assert not any(n.startswith(".") or n.endswith((".part", ".tmp", ".filepart",
                                                    ".crdownload")) for n in names)


def test_polling_mode(emu: Emulator, layout: Deployment, source: Path) -> None:
    """With polling (NFS/SMB), a file written slowly is taken once, after it settles."""
    layout.write_config(emu.url, watch={"polling": True, "poll_interval_seconds": 0.2})
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        src = make_audio(source / "p.wav", 300)
        _slow_copy(src, layout.inbox / "polled.wav", pause=1.0)
        make_audio(layout.inbox / "quick.wav", 301)
        wait_for(lambda: len(layout.sidecar_docs()) == 2, 30, what="polled files")
        d.wait_idle()
    finally:
        assert d.stop() == 0
    assert len(emu.calls) == 2 and set(successful_by_sha(emu).values()) == {1}


@pytest.mark.parametrize("point", ["claimed", "journaled", "sidecars", "move-linked"])
def test_crash_matrix(emu: Emulator, layout: Deployment, point: str) -> None:
    """kill -9 at each step; after restart nothing is lost, stranded or paid twice."""
    for i in range(3):
        make_audio(layout.inbox / f"c{i}.wav", 400 + i)
    layout.write_config(emu.url, api={"max_concurrency": 1})
    d = DaemonProcess(layout, once=True, env={"MIMO_WATCHD_CRASH_AT": point})
    code = d.wait(60)
    assert code == -signal.SIGKILL, d.text()
    calls_before = len(emu.calls)
    d2 = DaemonProcess(layout, once=True)
    assert d2.wait(60) == 0, d2.text()
    assert done_texts(layout) == Counter(text_for(400 + i) for i in range(3))
    assert sorted(p.name for p in layout.processed_audio()) == ["c0.wav", "c1.wav", "c2.wav"]
    assert not any(p.is_file() for p in layout.inbox.rglob("*"))
    assert not any(p.name.startswith(".mimo-watchd-") for p in layout.root.rglob("*"))
    per_content = successful_by_sha(emu)
    assert set(per_content.values()) == {1}, per_content
    if point != "claimed":
        # The crashed job's response was journaled: the restart did not ask for it again.
        assert len(emu.calls) == calls_before + 2


def test_file_that_kills_the_daemon_is_failed_after_max_interruptions(
        make_emulator: Callable[..., Emulator], layout: Deployment) -> None:
    """A file that kills the daemon (SIGKILL) every time it is taken goes to failed_dir after
    ``max_interruptions`` unclean stops, with a reason; the files that were in flight with it
    (1 s answers, 3 workers) are transcribed, not blamed; the daemon is not crashed forever."""
    emu = make_emulator(latency_scale=1.0, latency_base=1.0)
    make_audio(layout.inbox / "poison.wav", 450)
    for i in range(4):
        make_audio(layout.inbox / f"good{i}.wav", 451 + i)
    layout.write_config(emu.url, api={"max_concurrency": 3}, max_interruptions=2)
    codes = []
    for _ in range(5):
        d = DaemonProcess(layout, once=True, env={"MIMO_WATCHD_CRASH_AT": "claimed@poison"})
        codes.append(d.wait(60))
        if codes[-1] != -signal.SIGKILL:
            break
    # Killed when taking the file, twice; the third run fails it instead of taking it (and
    # exits 1: a file failed).
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, 1], (codes, d.text())
    assert [p.name for p in layout.failed.rglob("*.wav")] == ["poison.wav"]
    (err,) = layout.failed_errors()
    assert err["error"] == "CrashLoopError"
    assert "stopped unexpectedly 2 times" in err["reason"] and "retry" in err["reason"]
    assert done_texts(layout) == Counter(text_for(451 + i) for i in range(4))
    assert not any(p.is_file() for p in layout.inbox.rglob("*"))
    assert all(c.words != words_for(450) for c in emu.calls)  # never sent: it never got there
    assert '"event": "job.crash_loop"' in d.text()


def test_interruptions_clear_when_the_job_makes_progress(emu: Emulator, layout: Deployment) -> None:
    """Interruptions count only since the job's last journaled answer: killed once before its
    request and once after its answer, with max_interruptions 2, a file still finishes."""
    make_audio(layout.inbox / "j.wav", 460)
    layout.write_config(emu.url, max_interruptions=2)
    for point in ("claimed", "journaled"):
        d = DaemonProcess(layout, once=True, env={"MIMO_WATCHD_CRASH_AT": point})
        assert d.wait(60) == -signal.SIGKILL, d.text()
    d = DaemonProcess(layout, once=True)
    assert d.wait(60) == 0, d.text()
    assert done_texts(layout) == Counter([text_for(460)])
    assert len(emu.calls) == 1 and not layout.failed_errors()


def test_same_content_new_name_policies(emu: Emulator, layout: Deployment) -> None:
    """Same bytes again: reuse (no call), transcribe (a call), skip (moved, no sidecars)."""
    make_audio(layout.inbox / "orig.wav", 500)
    layout.write_config(emu.url)
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert len(emu.calls) == 1
    original = (layout.processed / "orig.wav").read_bytes()

    (layout.inbox / "copy1.wav").write_bytes(original)
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert len(emu.calls) == 1  # reuse: written from the earlier result
    doc = json.loads((layout.processed / "copy1.json").read_text())
    assert doc["transcript"] == text_for(500) and doc["duplicate_of"]

    layout.write_config(emu.url, on_duplicate="transcribe")
    (layout.inbox / "copy2.wav").write_bytes(original)
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert len(emu.calls) == 2

    layout.write_config(emu.url, on_duplicate="skip")
    (layout.inbox / "copy3.wav").write_bytes(original)
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert len(emu.calls) == 2
    assert (layout.processed / "copy3.wav").exists()
    assert not (layout.processed / "copy3.json").exists()


def test_two_copies_arriving_together_are_paid_once(emu: Emulator, layout: Deployment) -> None:
    """Identical files queued at the same time make one API call; both get sidecars."""
    first = make_audio(layout.inbox / "twin-a.wav", 550)
    for name in ("twin-b.wav", "twin-c.wav"):
        shutil.copy(first, layout.inbox / name)
    layout.write_config(emu.url, api={"max_concurrency": 3})
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert len(emu.calls) == 1
    assert done_texts(layout) == Counter({text_for(550): 3})


def test_name_reused_with_new_content_is_new_work(emu: Emulator, layout: Deployment) -> None:
    """A new file under an old name (Asterisk msg0000) is transcribed; nothing overwritten."""
    layout.write_config(emu.url)
    make_audio(layout.inbox / "msg0000.wav", 600)
    assert DaemonProcess(layout, once=True).wait(60) == 0
    make_audio(layout.inbox / "msg0000.wav", 601)
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert len(emu.calls) == 2
    assert (layout.processed / "msg0000.txt").read_text() == text_for(600) + "\n"
    assert (layout.processed / "msg0000-1.txt").read_text() == text_for(601) + "\n"
    assert (layout.processed / "msg0000-1.wav").exists()


def test_faults_every_file_ends_somewhere(emu: Emulator, layout: Deployment) -> None:
    """Under 429 storms, 5xx, timeouts and drops, every file ends processed or failed."""
    for kind in ("429", "500", "503", "drop-body", "drop-headers", "500-empty"):
        emu.add_fault(FaultRule(kind, times=3))
    emu.add_fault(FaultRule("400", when_word=V[3]))
    for i in range(8):
        make_audio(layout.inbox / f"x{i}.wav", i)
    layout.write_config(emu.url, max_attempts=10)
    d = DaemonProcess(layout, once=True)
    assert d.wait(120) == 1, d.text()  # one file failed (400)
    assert not any(p.is_file() for p in layout.inbox.rglob("*"))
    assert len(layout.processed_audio()) + len(layout.failed_errors()) == 8
    errors = layout.failed_errors()
    assert len(errors) == 1 and errors[0]["http_status"] == 400 and errors[0]["api_error"]
    assert (layout.failed / "x3.wav").exists()
    assert set(successful_by_sha(emu).values()) == {1}


@pytest.mark.parametrize("kind", ["401", "402-unwrapped"])
def test_operator_problem_pauses_and_resumes(emu: Emulator, layout: Deployment, kind: str) -> None:
    """401/402 pause all API work (files stay queued) until the API answers again."""
    emu.add_fault(FaultRule(kind, times=1000))
    for i in range(3):
        make_audio(layout.inbox / f"o{i}.wav", 700 + i)
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        wait_for(lambda: d.saw("daemon.paused"), 30, what="pause")
        paused_at, calls_then = time.monotonic(), len(emu.calls)
        wait_for(lambda: len(d.saw("pause.probe")) >= 2, 30, what="two probes")
        st = run_cli(layout, "status", "-c", str(layout.config), "--json")
        status = json.loads(st.stdout)
        assert status["paused"] and str(kind[:3]) in status["paused_reason"]
        # A probe (one file) may be in flight right now; nothing has failed.
        assert status["failed"] == 0 and status["queued"] + status["in_progress"] == 3
        assert len(layout.failed_errors()) == 0
        probes = len(emu.calls) - calls_then
        # Probing (one request per pause_probe_seconds, 0.5 s here), not hammering.
        assert probes <= (time.monotonic() - paused_at) / 0.5 + 2, probes
        emu.reset()
        wait_for(lambda: len(layout.sidecar_docs()) == 3, 30, what="resume")
        assert d.saw("daemon.resumed")
    finally:
        assert d.stop() == 0, d.text()


def test_bad_inputs_get_clear_outcomes(emu: Emulator, layout: Deployment, tmp_path: Path) -> None:
    """Empty, non-audio, truncated, FIFO, symlink out, odd names: clear outcome, no crash."""
    inbox = layout.inbox
    (inbox / "empty.wav").write_bytes(b"")
    (inbox / "text.wav").write_text("this is not audio\n" * 20)
    full = make_audio(tmp_path / "whole.m4a", 800, "m4a").read_bytes()
    (inbox / "truncated.m4a").write_bytes(full[: len(full) // 2])
    os.mkfifo(inbox / "pipe.wav")
    outside = make_audio(tmp_path / "outside.wav", 801)
    (inbox / "link.wav").symlink_to(outside)
    odd = {"with space.wav": 802, "new\nline.wav": 803, "ünïcødé 录音.wav": 804,
           "-leading-dash.wav": 805, "UPPER.WAV": 806, ("n" * 251) + ".wav": 807}
    for name, i in odd.items():
        make_audio(inbox / name, i)
    layout.write_config(emu.url)
    d = DaemonProcess(layout, once=True)
    assert d.wait(90) == 1, d.text()  # some files failed
    failed = {Path(e["source"]["original_path"]).name: e["reason"]
              for e in layout.failed_errors()}
    assert set(failed) == {"empty.wav", "text.wav", "truncated.m4a"}, failed
    assert "empty" in failed["empty.wav"].lower()
    assert "incomplete" in failed["truncated.m4a"].lower()
    assert (inbox / "pipe.wav").exists() and (inbox / "link.wav").is_symlink()
    assert outside.exists()
    assert done_texts(layout) == Counter(text_for(i) for i in odd.values())
    assert {p.name for p in layout.processed_audio()} == set(odd)


def test_sigterm_during_upload_finishes_in_flight(emu: Emulator, layout: Deployment) -> None:
    """SIGTERM while a request is in flight: intake stops, the job finishes, exit 0."""
    emu.add_fault(FaultRule("slow", delay=1.5))
    make_audio(layout.inbox / "slow.wav", 900)
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    wait_for(lambda: emu.calls or emu.in_flight(), 20, what="request in flight")
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0, d.text()
    assert done_texts(layout) == Counter([text_for(900)])


def test_sigterm_timeout_requeues_and_second_signal_exits(emu: Emulator,
                                                          layout: Deployment) -> None:
    """A job outliving the shutdown timeout is requeued; the next start finishes it."""
    emu.add_fault(FaultRule("slow", delay=4.0))
    make_audio(layout.inbox / "slow.wav", 901)
    layout.write_config(emu.url, shutdown_timeout_seconds=0.5)
    d = DaemonProcess(layout)
    d.wait_ready()
    wait_for(lambda: emu.in_flight(), 20, what="request in flight")
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    assert (layout.inbox / "slow.wav").exists()
    d2 = DaemonProcess(layout, once=True)
    assert d2.wait(60) == 0, d2.text()
    assert done_texts(layout) == Counter([text_for(901)])


def test_second_sigterm_exits_at_once(emu: Emulator, layout: Deployment) -> None:
    """A second SIGTERM exits at once; the file is still there and done on restart."""
    emu.add_fault(FaultRule("slow", delay=5.0))
    make_audio(layout.inbox / "slow.wav", 902)
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    wait_for(lambda: emu.in_flight(), 20, what="request in flight")
    d.signal(signal.SIGTERM)
    wait_for(lambda: d.saw("daemon.stopping"), 10, what="the first SIGTERM to be taken")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    d.wait(10)
    assert time.monotonic() - started < 3
    assert (layout.inbox / "slow.wav").exists()
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert done_texts(layout) == Counter([text_for(902)])


def test_sighup_reload_good_and_broken(emu: Emulator, layout: Deployment, tmp_path: Path) -> None:
    """SIGHUP adds a watch; a broken config is rejected and the old one keeps running."""
    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        second = tmp_path / "inbox2"
        second.mkdir()
        layout.write_config(emu.url, extra_watches=[{
            "path": str(second), "processed_dir": str(tmp_path / "processed2"),
            "failed_dir": str(tmp_path / "failed2"), "settle_seconds": 0.3}])
        d.signal(signal.SIGHUP)
        wait_for(lambda: d.saw("reload.done"), 20, what="reload")
        make_audio(second / "new.wav", 1000)
        wait_for(lambda: (tmp_path / "processed2" / "new.txt").exists(), 30,
                 what="file in new watch")
        layout.config.write_text("watches: [oops\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: d.saw("reload.rejected"), 20, what="rejection")
        make_audio(layout.inbox / "still.wav", 1001)
        wait_for(lambda: (layout.processed / "still.txt").exists(), 30, what="old config")
    finally:
        assert d.stop() == 0, d.text()


def test_status_and_retry(emu: Emulator, layout: Deployment) -> None:
    """run --once exits 1 when a file failed; status (not running: exit 3) lists the failure
    where the file is now, with its reason; retry --failed moves it back and it succeeds."""
    emu.add_fault(FaultRule("421", times=1))
    make_audio(layout.inbox / "r.wav", 1100)
    layout.write_config(emu.url)
    assert DaemonProcess(layout, once=True).wait(60) == 1
    st = run_cli(layout, "status", "-c", str(layout.config))
    assert st.returncode == 3, st
    assert "failed 1" in st.stdout and "421" in st.stdout
    assert f"{layout.failed / 'r.wav'}: chunk 0 (0.0-" in st.stdout
    assert (layout.failed / "r.wav").exists()
    rt = run_cli(layout, "retry", "-c", str(layout.config), "--failed")
    assert rt.returncode == 0, rt.stderr
    assert (layout.inbox / "r.wav").exists() and not (layout.failed / "r.error.json").exists()
    assert DaemonProcess(layout, once=True).wait(60) == 0
    assert done_texts(layout) == Counter([text_for(1100)])
    st = json.loads(run_cli(layout, "status", "-c", str(layout.config), "--json").stdout)
    assert st["done"] == 1 and st["failed"] == 0 and not st["running"]


def test_refuses_output_folder_inside_watch(emu: Emulator, layout: Deployment) -> None:
    """A processed folder inside the watched tree is refused at start with exit code 78."""
    layout.write_config(emu.url, watch={"processed_dir": str(layout.inbox / "done")})
    d = DaemonProcess(layout)
    assert d.wait(30) == 78
    assert "inside the watched folder" in d.text()


def test_no_secret_in_any_output(emu: Emulator, layout: Deployment) -> None:
    """The API key appears in no log line, sidecar, error file or status output."""
    emu.add_fault(FaultRule("400", when_word=V[1]))
    make_audio(layout.inbox / "a.wav", 0)
    make_audio(layout.inbox / "b.wav", 1)
    layout.write_config(emu.url)
    d = DaemonProcess(layout, once=True)
    assert d.wait(60) == 1  # b.wav failed (400)
    st = run_cli(layout, "status", "-c", str(layout.config), "--json")
    blobs = [d.text(), st.stdout, st.stderr]
    blobs += [p.read_text(errors="replace") for p in layout.root.rglob("*.json")]
    blobs += [p.read_text(errors="replace") for p in layout.root.rglob("*.txt")]
    assert len(blobs) > 5
    assert not any(API_KEY in b for b in blobs)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_burst_overflowing_inotify(emu: Emulator, layout: Deployment) -> None:
    """More files than the inotify queue can announce, written while the daemon is stopped
    (SIGSTOP), overflow it; the daemon says so and processes every file once."""
    count = burst_to_overflow()
    if count > MAX_BURST_FILES:
        pytest.skip(f"overflowing this host's inotify queue takes {count:,} files "
                    f"(fs.inotify.max_queued_events); the test stops at {MAX_BURST_FILES:,}")
    subs = [layout.inbox / f"d{k}" for k in range(20)]
    for sub in subs:
        sub.mkdir()  # before the start, so that the daemon watches them all
    layout.write_config(emu.url, api={"max_concurrency": 4}, rescan_interval_seconds=30.0)
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        # Stopped, the daemon reads no events: the kernel queue fills up and overflows.
        d.signal(signal.SIGSTOP)
        try:
            for i in range(count):
                data = tones.to_bytes([V[i % 40], V[(i // 40) % 40], V[(i // 1600) % 40]],
                                      "wav", word_seconds=0.15, gap_seconds=0.05,
                                      lead_seconds=0.02)
                (subs[i % 20] / f"f{i}.wav").write_bytes(data)
        finally:
            d.signal(signal.SIGCONT)
        wait_for(lambda: d.saw("inotify_overflow"), 60, what="the overflow to be reported")
        wait_for(lambda: _count_json(layout) >= count, 900, interval=2.0,
                 what=f"{count:,} files processed")
        d.wait_idle()
    finally:
        assert d.stop(60) == 0, d.text()[-3000:]
    assert len(emu.calls) == count
    assert set(successful_by_sha(emu).values()) == {1}
    assert not any(p.is_file() for p in layout.inbox.rglob("*"))


def _count_json(layout: Deployment) -> int:
    return sum(1 for _ in layout.processed.rglob("*.json"))
