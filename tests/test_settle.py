"""The settler on real files: quiet periods, open writers, the container probe, exactly-once.

Time is a fake clock where the test is about waiting; writers are real processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mimo_watchd import writers
from mimo_watchd.errors import AudioError, IncompleteAudioError
from mimo_watchd.settle import Ready, Settler
from mimo_watchd.watcher import Arrival
from tests.support import make_watch, whole

SETTLE = 2.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = tmp_path / "watch"
    made.mkdir()
    return made


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settler(clock: FakeClock, probe: Callable[[Path], object] = whole,
            incomplete_timeout: float = 60.0) -> Settler:
    return Settler(probe=probe, incomplete_timeout=incomplete_timeout, clock=clock)


def arrive(s: Settler, root: Path, name: str, event: str) -> Path:
    path = root / name
    s.offer(Arrival(make_watch(root, settle_seconds=SETTLE), path, event, time.monotonic()))
    return path


def names(ready: list[Ready]) -> list[str]:
    return sorted(r.path.name for r in ready)


@pytest.fixture
def holder() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts processes that open a file (for writing, or reading) and hold it until killed."""
    started: list[subprocess.Popen[str]] = []

    def hold(path: Path, mode: str = "ab") -> subprocess.Popen[str]:
        code = (f"import sys; f = open({str(path)!r}, {mode!r}); print('open', flush=True); "
                "sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        started.append(proc)
        return proc

    yield hold
    for proc in started:
        proc.communicate("")


# -- the quiet period --------------------------------------------------------------------------

@pytest.mark.parametrize("event", ["closed", "moved"])
def test_close_or_rename_arrivals_are_ready_at_once(event: str, root: Path,
                                                    clock: FakeClock) -> None:
    """A close-after-write or a rename into the tree needs no quiet period."""
    s = settler(clock)
    (root / "a.wav").write_bytes(b"data")
    arrive(s, root, "a.wav", event)
    [ready] = s.poll()
    assert (ready.path, ready.size, ready.incomplete_reason) == (root / "a.wav", 4, None)
    assert ready.mtime_ns == (root / "a.wav").stat().st_mtime_ns
    assert s.pending() == 0


@pytest.mark.parametrize("event", ["created", "modified", "poll"])
def test_other_arrivals_wait_for_the_quiet_period(event: str, root: Path,
                                                  clock: FakeClock) -> None:
    """Created, modified and polled files are ready only after settle_seconds unchanged."""
    s = settler(clock)
    (root / "a.wav").write_bytes(b"data")
    arrive(s, root, "a.wav", event)
    assert s.poll() == []
    assert s.next_check_in() == pytest.approx(SETTLE)
    clock.advance(SETTLE - 0.1)
    assert s.poll() == []
    clock.advance(0.1)
    assert names(s.poll()) == ["a.wav"]


def test_a_scan_finding_an_old_file_needs_no_wait_but_a_fresh_one_does(root: Path,
                                                                       clock: FakeClock) -> None:
    """A scanned file whose mtime is older than the quiet period is quiet already."""
    s = settler(clock)
    (root / "old.wav").write_bytes(b"x")
    os.utime(root / "old.wav", (time.time() - 10, time.time() - 10))
    (root / "fresh.wav").write_bytes(b"x")
    arrive(s, root, "old.wav", "scan")
    arrive(s, root, "fresh.wav", "scan")
    assert names(s.poll()) == ["old.wav"]
    clock.advance(SETTLE)
    assert names(s.poll()) == ["fresh.wav"]


def test_any_change_restarts_the_quiet_period(root: Path, clock: FakeClock) -> None:
    """A file that grows, even after a close was seen, waits for a new quiet period."""
    s = settler(clock)
    path = root / "a.wav"
    path.write_bytes(b"one")
    arrive(s, root, "a.wav", "created")
    clock.advance(SETTLE - 0.5)
    with open(path, "ab") as f:
        f.write(b"two")
    assert s.poll() == []
    clock.advance(SETTLE - 0.5)
    assert s.poll() == []
    clock.advance(0.5)
    [ready] = s.poll()
    assert ready.size == 6


# -- exactly once ------------------------------------------------------------------------------

def test_each_version_is_handed_out_once_and_forget_makes_the_path_new(root: Path,
                                                                        clock: FakeClock) -> None:
    """Repeated arrivals of an unchanged file give nothing; a changed file or forget() does."""
    s = settler(clock)
    path = root / "a.wav"
    path.write_bytes(b"v1")
    for event in ("created", "closed", "scan", "closed"):
        arrive(s, root, "a.wav", event)
    assert len(s.poll()) == 1
    arrive(s, root, "a.wav", "scan")
    arrive(s, root, "a.wav", "closed")
    assert s.poll() == [] and s.pending() == 0
    path.write_bytes(b"v2 longer")
    arrive(s, root, "a.wav", "closed")
    [again] = s.poll()
    assert again.size == 9
    s.forget(path)
    arrive(s, root, "a.wav", "closed")
    assert len(s.poll()) == 1


def test_a_new_file_in_the_same_place_with_the_same_size_and_mtime_is_new(
        root: Path, clock: FakeClock, tmp_path: Path) -> None:
    """A file replaced by another (another inode) with equal size and mtime is handed out again,
    as is the same file moved away and back once the settler has noticed it left."""
    s = settler(clock)
    path = root / "a.wav"
    path.write_bytes(b"same")
    arrive(s, root, "a.wav", "closed")
    [first] = s.poll()
    (tmp_path / "b.wav").write_bytes(b"same")
    os.utime(tmp_path / "b.wav", ns=(first.mtime_ns, first.mtime_ns))
    os.rename(tmp_path / "b.wav", path)
    arrive(s, root, "a.wav", "moved")
    assert len(s.poll()) == 1
    os.rename(path, tmp_path / "away.wav")
    clock.advance(61)  # the settler's sweep notices that it left
    assert s.poll() == []
    os.rename(tmp_path / "away.wav", path)
    arrive(s, root, "a.wav", "moved")
    assert len(s.poll()) == 1


def test_vanished_files_and_special_files_are_dropped_without_opening(
        root: Path, clock: FakeClock, tmp_path: Path) -> None:
    """Arrivals of a deleted file, a FIFO, a socket-like non-file or a symlink are dropped; a
    FIFO is never opened (it would block)."""
    s = settler(clock)
    os.mkfifo(root / "pipe.wav")
    (tmp_path / "target.wav").write_bytes(b"x")
    (root / "link.wav").symlink_to(tmp_path / "target.wav")
    (root / "dir.wav").mkdir()
    (root / "gone.wav").write_bytes(b"x")
    for name in ("pipe.wav", "link.wav", "dir.wav", "gone.wav", "never.wav"):
        arrive(s, root, name, "closed")
    (root / "gone.wav").unlink()
    assert s.poll() == [] and s.pending() == 0


def test_a_file_reached_through_a_symlinked_folder_out_of_the_tree_is_never_ready(
        root: Path, clock: FakeClock, tmp_path: Path) -> None:
    """The real path of a file must lie inside the watch root, whatever path it arrived by."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    (root / "sub").symlink_to(outside)
    s = settler(clock)
    arrive(s, root, "sub/secret.wav", "closed")
    assert s.poll() == [] and s.pending() == 0


def test_a_file_changed_while_it_was_probed_is_not_handed_out(root: Path,
                                                              clock: FakeClock) -> None:
    """If the file changes during the probe, it waits for a new quiet period instead."""
    path = root / "a.wav"
    path.write_bytes(b"x")
    calls = []

    def probe(p: Path) -> None:
        calls.append(p)
        if len(calls) == 1:
            with open(p, "ab") as f:
                f.write(b"more")

    s = settler(clock, probe)
    arrive(s, root, "a.wav", "closed")
    assert s.poll() == []
    clock.advance(SETTLE)
    [ready] = s.poll()
    assert ready.size == 5 and len(calls) == 2


def test_arrived_at_is_the_wall_clock_time_of_the_first_sighting(root: Path,
                                                                 clock: FakeClock) -> None:
    """arrived_at comes from the earliest arrival, converted to wall-clock time."""
    s = settler(clock)
    (root / "a.wav").write_bytes(b"x")
    watch = make_watch(root, settle_seconds=SETTLE)
    s.offer(Arrival(watch, root / "a.wav", "created", time.monotonic() - 5))
    s.offer(Arrival(watch, root / "a.wav", "closed", time.monotonic()))
    [ready] = s.poll()
    assert ready.arrived_at == pytest.approx(time.time() - 5, abs=0.5)


# -- writers still at work ---------------------------------------------------------------------

def test_a_file_open_for_writing_is_not_ready_until_closed(
        root: Path, clock: FakeClock, holder: Callable[..., subprocess.Popen[str]]) -> None:
    """Quiet or not, closed-event or not: while any process holds the file open for writing it
    waits (re-checked with backoff); readers do not count."""
    path = root / "a.wav"
    path.write_bytes(b"x")
    writer = holder(path, "ab")
    holder(path, "rb")
    s = settler(clock)
    arrive(s, root, "a.wav", "closed")
    assert s.poll() == []
    assert s.next_check_in() == pytest.approx(0.25)
    clock.advance(30)
    assert s.poll() == [] and s.pending() == 1
    writer.communicate("")
    clock.advance(2.0)
    assert names(s.poll()) == ["a.wav"]


def test_writers_are_found_through_proc_when_leases_are_refused(
        root: Path, clock: FakeClock, holder: Callable[..., subprocess.Popen[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a lease cannot be taken (not the owner, or a file system without leases), the
    /proc scan still sees the writer."""
    monkeypatch.setattr(writers, "lease_busy", lambda path, st: None)
    path = root / "a.wav"
    path.write_bytes(b"x")
    writer = holder(path, "r+b")
    s = settler(clock)
    arrive(s, root, "a.wav", "closed")
    assert s.poll() == []
    writer.communicate("")
    clock.advance(2.0)
    assert names(s.poll()) == ["a.wav"]


def test_lease_and_proc_checks_tell_writers_from_readers(
        root: Path, holder: Callable[..., subprocess.Popen[str]]) -> None:
    """Both ways report a file open for writing as busy and one open for reading as free."""
    written, read = root / "w.wav", root / "r.wav"
    written.write_bytes(b"x")
    read.write_bytes(b"x")
    holder(written, "wb")
    holder(read, "rb")
    assert writers.lease_busy(written, written.lstat()) is True
    assert writers.lease_busy(read, read.lstat()) is False
    assert writers.proc_writers([str(written), str(read)]) == {str(written)}
    assert writers.busy_files({str(written): written.lstat(), str(read): read.lstat()}) == {
        str(written)}


def test_the_writer_checks_are_cheap(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lease check costs microseconds; a /proc scan of the whole machine, milliseconds."""
    path = root / "a.wav"
    path.write_bytes(b"x")
    st = path.lstat()
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        writers.lease_busy(path, st)
    lease_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    writers.proc_writers([str(path)])
    proc_ms = (time.perf_counter() - started) * 1e3
    fds = 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):  # processes come and go
            fds += len(os.listdir(f"/proc/{pid}/fd"))
    with capsys.disabled():
        print(f"\nwriter checks: lease {lease_us:.1f} us/file; /proc scan {proc_ms:.2f} ms "
              f"for {fds} open descriptors")
    assert lease_us < 200
    assert proc_ms < 500


def test_network_file_systems_skip_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """mountinfo is parsed into device -> type; NFS, SMB and FUSE mounts count as network."""
    sample = [
        "36 35 98:0 / /srv rw,noatime master:1 - ext4 /dev/root rw,errors=continue",
        "40 35 0:52 / /mnt/nas rw,relatime shared:2 - nfs4 nas:/export rw,vers=4.2",
        "41 35 0:53 / /mnt/smb rw - cifs //host/share rw",
        "42 35 0:54 / /mnt/ssh rw - fuse.sshfs user@host: rw",
        "garbage",
    ]
    found = writers.parse_mountinfo(sample)
    assert found == {os.makedev(98, 0): "ext4", os.makedev(0, 52): "nfs4",
                     os.makedev(0, 53): "cifs", os.makedev(0, 54): "fuse.sshfs"}
    monkeypatch.setattr(writers, "_fs_types", found)
    assert [writers.is_network_fs(os.makedev(*d)) for d in [(98, 0), (0, 52), (0, 53), (0, 54)]
            ] == [False, True, True, True]
    assert writers.fs_type(os.stat("/proc/self").st_dev) in ("proc", "")


# -- the container probe -----------------------------------------------------------------------

def test_an_incomplete_container_waits_with_backoff_until_whole(root: Path,
                                                                clock: FakeClock) -> None:
    """While the probe says incomplete the file is re-probed, less and less often."""
    path = root / "a.m4a"
    path.write_bytes(b"x")
    calls: list[float] = []

    def probe(p: Path) -> None:
        calls.append(clock.now)
        if len(calls) < 5:
            raise IncompleteAudioError("no moov atom yet")

    s = settler(clock, probe)
    arrive(s, root, "a.m4a", "closed")
    waits = []
    for _ in range(4):
        assert s.poll() == []
        waits.append(s.next_check_in())
        clock.advance(waits[-1])
    assert waits == [0.5, 1.0, 2.0, 4.0]
    [ready] = s.poll()
    assert ready.incomplete_reason is None


def test_a_container_never_whole_is_handed_out_with_a_reason_after_the_timeout(
        root: Path, clock: FakeClock) -> None:
    """After incomplete_timeout the file is handed out once, saying why it is incomplete."""
    def probe(p: Path) -> None:
        raise IncompleteAudioError("truncated: no moov atom")

    (root / "a.m4a").write_bytes(b"x")
    s = settler(clock, probe, incomplete_timeout=100.0)
    arrive(s, root, "a.m4a", "closed")
    got: list[Ready] = []
    for _ in range(40):
        got += s.poll()
        if got:
            break
        clock.advance(s.next_check_in())
    [ready] = got
    assert ready.incomplete_reason == "truncated: no moov atom"
    assert clock.now - 1000.0 == 100.0  # the last wait is cut short at the deadline
    arrive(s, root, "a.m4a", "scan")
    assert s.poll() == []


@pytest.mark.parametrize("error", [AudioError("not audio"), ValueError("probe bug")])
def test_other_probe_failures_count_as_whole(error: Exception, root: Path,
                                             clock: FakeClock) -> None:
    """Only IncompleteAudioError means wait; any other failure is the daemon's to report."""
    def probe(p: Path) -> None:
        raise error

    (root / "a.wav").write_bytes(b"x")
    s = settler(clock, probe)
    arrive(s, root, "a.wav", "closed")
    [ready] = s.poll()
    assert ready.incomplete_reason is None


# -- threads -----------------------------------------------------------------------------------

def test_offer_never_waits_for_a_slow_poll_and_loses_nothing(root: Path) -> None:
    """Offers from several threads all go through while poll() is held inside a probe, and
    every offered file becomes ready exactly once."""
    for i in range(400):
        (root / f"f{i:03d}.wav").write_bytes(b"x")
    probing, release = threading.Event(), threading.Event()

    def held_probe(p: Path) -> None:
        probing.set()
        release.wait(30)

    s = Settler(probe=held_probe, incomplete_timeout=60)
    watch = make_watch(root, settle_seconds=SETTLE)
    ready: list[Ready] = []

    def offer_all(start: int) -> None:
        for i in range(start, 400, 4):
            s.offer(Arrival(watch, root / f"f{i:03d}.wav", "closed", time.monotonic()))

    s.offer(Arrival(watch, root / "f000.wav", "closed", time.monotonic()))
    poller = threading.Thread(target=lambda: ready.extend(s.poll()))
    poller.start()
    assert probing.wait(10)
    offerers = [threading.Thread(target=offer_all, args=(k,)) for k in range(4)]
    for t in offerers:
        t.start()
    for t in offerers:
        t.join(10)
    offered_while_held = poller.is_alive() and not any(t.is_alive() for t in offerers)
    release.set()
    poller.join()
    for t in offerers:
        t.join()
    assert offered_while_held
    while s.pending():
        ready.extend(s.poll())
    assert sorted(r.path.name for r in ready) == sorted(f"f{i:03d}.wav" for i in range(400))


def test_next_check_in_says_when_to_poll_again(root: Path, clock: FakeClock) -> None:
    """0 while arrivals wait, the time left of a quiet period, and a long idle time otherwise."""
    s = settler(clock)
    assert s.next_check_in() >= 60
    (root / "a.wav").write_bytes(b"x")
    arrive(s, root, "a.wav", "created")
    assert s.next_check_in() == 0.0
    s.poll()
    clock.advance(0.5)
    assert s.next_check_in() == pytest.approx(SETTLE - 0.5)


def test_forget_drops_a_pending_file(root: Path, clock: FakeClock, tmp_path: Path) -> None:
    """A file forgotten while it waits is not handed out (until it arrives again)."""
    s = settler(clock)
    (root / "a.wav").write_bytes(b"x")
    path = arrive(s, root, "a.wav", "created")
    s.poll()
    s.forget(path)
    clock.advance(SETTLE)
    assert s.poll() == [] and s.pending() == 0
    shutil.copy(path, tmp_path / "copy.wav")
    arrive(s, root, "a.wav", "closed")
    assert len(s.poll()) == 1
