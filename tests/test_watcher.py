"""The watcher with the settler, on real folders with real senders: every file ready exactly once.

Senders are real programs (cp, mv, rsync, writer subprocesses); the container probe is a small
RIFF size check, so a WAV file whose header promises more than it holds counts as incomplete.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mimo_watchd.config import DEFAULT_INCLUDE, WatchSettings
from mimo_watchd.errors import IncompleteAudioError
from mimo_watchd.names import is_temp_name
from mimo_watchd.settle import Ready, Settler
from mimo_watchd.watcher import Arrival, WatchSet, accepts, scan
from tests.support import MAX_BURST_FILES, SETTLE, burst_to_overflow, make_watch, wait_for, whole

PAUSE = 0.7  # a writer's pause: longer than the quiet period, so a wrong take would happen
REPO = Path(__file__).resolve().parent.parent


def wav(data_bytes: int) -> bytes:
    """A WAV file (8 kHz mono 8-bit) whose RIFF header declares exactly its size."""
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
           + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
           + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little"))
    body = b"WAVE" + fmt + b"data" + data_bytes.to_bytes(4, "little") + b"\x80" * data_bytes
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def riff_probe(path: Path) -> None:
    """Raises IncompleteAudioError while a RIFF file holds less than its header declares."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == b"RIFF":
        declared = int.from_bytes(head[4:8], "little") + 8
        size = os.stat(path).st_size
        if size < declared:
            raise IncompleteAudioError(f"RIFF declares {declared} bytes, holds {size}")


class Intake:
    """A WatchSet feeding a Settler that a thread polls, wired as the daemon wires them."""

    def __init__(self, *watches: WatchSettings, probe: Callable[[Path], object] = riff_probe,
                 incomplete_timeout: float = 30.0, rescan_interval: float = 300.0) -> None:
        self._capture = capture_logs()
        self.logs: list[dict[str, Any]] = []
        self.settler = Settler(probe=probe, incomplete_timeout=incomplete_timeout)
        self.arrivals: list[Arrival] = []
        self.ready: list[tuple[float, Ready]] = []
        self.polls = 0  # rounds of the polling thread completed
        self._woken = threading.Event()
        self._stop = threading.Event()
        self.watchset = WatchSet(watches, self.sink, rescan_interval=rescan_interval)
        self._thread = threading.Thread(target=self._loop, name="test-intake")
        self._threads_before = set(threading.enumerate())

    def sink(self, arrival: Arrival) -> None:
        self.settler.offer(arrival)
        self.arrivals.append(arrival)
        self._woken.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for ready in self.settler.poll():
                self.ready.append((time.monotonic(), ready))
            self.polls += 1
            self._woken.wait(min(self.settler.next_check_in(), 0.05))
            self._woken.clear()

    def events(self, level: str | None = None) -> list[str]:
        """The events logged so far (at ``level``)."""
        return [e["event"] for e in self.logs if level in (None, e["log_level"])]

    def __enter__(self) -> Intake:
        self.logs = self._capture.__enter__()
        self.watchset.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._woken.set()
        self._thread.join()
        self.watchset.stop()
        self._capture.__exit__(None, None, None)
        leaked = [t for t in threading.enumerate() if t not in self._threads_before]
        assert not leaked, f"threads left running: {leaked}"

    def counts(self) -> Counter[str]:
        return Counter(r.path.name for _, r in self.ready)

    def ready_at(self, name: str) -> float:
        return next(t for t, r in self.ready if r.path.name == name)

    def wait_ready(self, *names: str, timeout: float = 10.0) -> None:
        """Waits until each of ``names`` has been handed out."""
        wait_for(lambda: all(self.counts()[n] for n in names), timeout,
                 f"{sorted(names)} to be ready", interval=0.01)

    def quiesce(self, timeout: float = 30.0) -> None:
        """Waits until whatever was sent to the watched folders so far has been offered to the
        settler and the settler holds nothing back: from then on nothing more is handed out
        unless something new arrives.

        The watch set says so (``status()``): no watch is busy, and a polling watch has
        completed two more rounds (the second begun after this call). Then the settler must
        have nothing pending and the polling thread must finish the round that emptied it.
        """
        start = {w["path"]: w["polls"] for w in self.watchset.status()}

        def passed_on() -> bool:
            return all(not w["busy"] and (w["mode"] == "inotify"
                                          or w["polls"] >= start.get(w["path"], 0) + 2)
                       for w in self.watchset.status())

        wait_for(passed_on, timeout, "the watch set to pass on what happened", interval=0.01)
        since: list[int] = []

        def settled() -> bool:
            if self.settler.pending():
                since.clear()
                return False
            if not since:
                since.append(self.polls)
            self._woken.set()
            return self.polls > since[0]

        wait_for(settled, timeout, "the settler to hand out what it holds", interval=0.01)

    def assert_exactly(self, names: set[str]) -> None:
        """Waits for ``names``, then until nothing more can come, and checks nothing else came
        or came twice."""
        self.wait_ready(*names)
        self.quiesce()
        counts = self.counts()
        assert set(counts) == names, counts
        assert all(n == 1 for n in counts.values()), counts


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """A watched folder, a sibling folder on the same file system, and an outside folder."""
    made = {k: tmp_path / k for k in ("watch", "side", "outside", "rsync-tmp")}
    for p in made.values():
        p.mkdir()
    return made


# -- names -------------------------------------------------------------------------------------

TEMP_NAMES = [
    ".call.wav.Xy12Zq", ".syncthing.call.wav.tmp", "~syncthing~call.wav.tmp", "call.wav.part",
    "call.wav.filepart", "call.wav.crdownload", "call.wav.tmp", "call.wav.lftp", ".in.call.wav.",
    ".hidden.wav", "CALL.WAV.PART", "call.wav.Tmp",
]  # fmt: skip
TAKEN_NAMES = [
    "call.wav", "CALL.WAV", "Memo.M4a", "call.sync-conflict-20240101-120000-ABCDEFG.wav",
    "with space.mp3", "new\nline.wav", "ünïcødé 录音.opus", "-leading-dash.wav", "x" * 251 + ".wav",
    "msg0001.gsm",
]  # fmt: skip


@pytest.mark.parametrize("name", TEMP_NAMES)
def test_temp_and_hidden_names_are_never_taken(name: str, tmp_path: Path) -> None:
    """A sender's temp name or a dot-file is refused even when include would take it."""
    watch = make_watch(tmp_path, include=("*",))
    assert is_temp_name(name)
    assert not accepts(watch, tmp_path / name)


@pytest.mark.parametrize("name", TAKEN_NAMES)
def test_ordinary_odd_and_conflict_names_are_taken(name: str, tmp_path: Path) -> None:
    """Audio names with odd characters, upper-case extensions or conflict suffixes are taken."""
    assert accepts(make_watch(tmp_path), tmp_path / "sub" / name)


def test_include_and_exclude_are_case_insensitive_on_names_and_relative_paths(
        tmp_path: Path) -> None:
    """Globs match regardless of case: without '/' a name, with '/' the path below the root."""
    watch = make_watch(tmp_path, include=("*.WAV", "inbox/*.txt"),
                       exclude=("SKIP*", "Archive/2023/*", "*/tmp/*"))
    takes = {rel: accepts(watch, tmp_path / rel) for rel in [
        "a.wav", "b.Wav", "c.mp3", "inbox/note.TXT", "other/note.txt", "skip-me.wav",
        "archive/2023/old.wav", "archive/2024/new.wav", "x/tmp/y.wav", "skipdir/a.wav"]}
    assert takes == {
        "a.wav": True, "b.Wav": True, "c.mp3": False, "inbox/note.TXT": True,
        "other/note.txt": False, "skip-me.wav": False, "archive/2023/old.wav": False,
        "archive/2024/new.wav": True, "x/tmp/y.wav": False, "skipdir/a.wav": False,
    }  # fmt: skip


def test_hidden_folders_and_non_recursive_watches_limit_what_is_taken(tmp_path: Path) -> None:
    """Nothing below a dot-folder is taken; a non-recursive watch takes its top level only."""
    deep = make_watch(tmp_path)
    flat = make_watch(tmp_path, recursive=False)
    assert not accepts(deep, tmp_path / ".stversions" / "a.wav")
    assert not accepts(deep, tmp_path / "a" / ".git" / "b" / "c.wav")
    assert accepts(deep, tmp_path / "a" / "b" / "c.wav")
    assert accepts(flat, tmp_path / "c.wav")
    assert not accepts(flat, tmp_path / "a" / "c.wav")
    assert not accepts(deep, tmp_path.parent / "elsewhere.wav")
    assert not accepts(deep, tmp_path)


# -- scanning ----------------------------------------------------------------------------------

def test_scan_takes_regular_files_only_and_never_leaves_the_tree(dirs: dict[str, Path]) -> None:
    """Symlinks (out or in), symlinked folders, FIFOs, sockets, temp names and excluded or
    hidden folders are all skipped, without opening anything."""
    root, outside = dirs["watch"], dirs["outside"]
    (outside / "secret.wav").write_bytes(wav(10))
    (outside / "inner").mkdir()
    (outside / "inner" / "deep.wav").write_bytes(wav(10))
    for rel in ("a.wav", "sub/b.mp3", "sub/deeper/c.m4a", "processed/done.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(wav(10))
    for rel in (".hide/h.wav", "sub/.x.wav.AbCdEf", "sub/d.wav.part", "notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "link-out.wav").symlink_to(outside / "secret.wav")
    (root / "link-in.wav").symlink_to(root / "a.wav")
    (root / "linked-dir").symlink_to(outside / "inner")
    os.mkfifo(root / "pipe.wav")
    skipped: list[Path] = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock.wav"))
        found = sorted(p.relative_to(root).as_posix()
                       for p in scan(make_watch(root, exclude=("processed",)),
                                     on_skip=skipped.append))
    assert found == ["a.wav", "sub/b.mp3", "sub/deeper/c.m4a"]
    # Regular files in the folders walked that the name rules do not take are reported (to be
    # logged once); files in folders not entered, links and special files are not.
    assert sorted(p.relative_to(root).as_posix() for p in skipped) == [
        "notes.txt", "sub/.x.wav.AbCdEf", "sub/d.wav.part"]


def test_scan_skips_folders_that_vanish_mid_walk(dirs: dict[str, Path]) -> None:
    """A folder deleted while the scan walks is skipped without an error."""
    root = dirs["watch"]
    for d in ("a", "b", "c"):
        (root / d / "x").mkdir(parents=True)
        (root / d / "x" / "f.wav").write_bytes(b"")
    (root / "top.wav").write_bytes(b"")
    errors: list[OSError] = []
    walk = scan(make_watch(root), on_error=errors.append)
    first = next(walk)
    for d in ("a", "b", "c"):
        shutil.rmtree(root / d)
    assert [first, *walk] == [root / "top.wav"]
    assert errors == []


def test_scan_below_a_folder_and_of_a_symlinked_root(dirs: dict[str, Path], tmp_path: Path) -> None:
    """A watch root that is itself a symlink is followed; ``below`` limits the walk."""
    real = dirs["watch"]
    (real / "in" / "d").mkdir(parents=True)
    (real / "in" / "d" / "x.wav").write_bytes(b"")
    (real / "y.wav").write_bytes(b"")
    link = tmp_path / "drop"
    link.symlink_to(real)
    watch = make_watch(link)
    assert sorted(scan(watch)) == [link / "in" / "d" / "x.wav", link / "y.wav"]
    assert list(scan(watch, below=link / "in")) == [link / "in" / "d" / "x.wav"]
    assert list(scan(watch, below=tmp_path)) == []


# -- arrivals: the sender matrix ---------------------------------------------------------------

def _slow_write(path: Path, data: bytes, *, pauses: int = 1) -> None:
    """Writes ``data`` to ``path`` in pieces from one open file, pausing between them."""
    step = len(data) // (pauses + 1) + 1
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            if i + step < len(data):
                time.sleep(PAUSE)


def _send_cp(d: dict[str, Path], src: Path) -> set[str]:
    subprocess.run(["cp", str(src), str(d["watch"] / "cp.wav")], check=True)
    return {"cp.wav"}


def _send_mv(d: dict[str, Path], src: Path) -> set[str]:
    shutil.copy(src, d["side"] / "mv.wav")
    subprocess.run(["mv", str(d["side"] / "mv.wav"), str(d["watch"])], check=True)
    return {"mv.wav"}


def _send_hard_link(d: dict[str, Path], src: Path) -> set[str]:
    os.link(src, d["watch"] / "linked.wav")  # only IN_CREATE: taken after the quiet period
    return {"linked.wav"}


def _send_rsync(d: dict[str, Path], src: Path) -> set[str]:
    subprocess.run(["rsync", str(src), str(d["watch"] / "rsync.wav")], check=True)
    return {"rsync.wav"}


def _send_rsync_inplace(d: dict[str, Path], src: Path) -> set[str]:
    subprocess.run(["rsync", "--inplace", str(src), str(d["watch"] / "inplace.wav")], check=True)
    return {"inplace.wav"}


def _send_rsync_temp_dir(d: dict[str, Path], src: Path) -> set[str]:
    subprocess.run(["rsync", f"--temp-dir={d['rsync-tmp']}", str(src),
                    str(d["watch"] / "tempdir.wav")], check=True)
    return {"tempdir.wav"}


def _send_rsync_archive(d: dict[str, Path], src: Path) -> set[str]:
    os.utime(src, (1_000_000_000, 1_000_000_000))  # 2001: rsync -a keeps it
    subprocess.run(["rsync", "-a", str(src), str(d["watch"] / "archive.wav")], check=True)
    return {"archive.wav"}


def _send_rsync_tree(d: dict[str, Path], src: Path) -> set[str]:
    for i in range(3):
        (d["side"] / "tree" / f"s{i}").mkdir(parents=True)
        shutil.copy(src, d["side"] / "tree" / f"s{i}" / f"t{i}.wav")
    subprocess.run(["rsync", "-r", f"{d['side'] / 'tree'}/", f"{d['watch']}/"], check=True)
    return {"t0.wav", "t1.wav", "t2.wav"}


TEMP_THEN_FINAL = [
    (".syncthing.st.wav.tmp", "st.wav"), ("~syncthing~st2.wav.tmp", "st2.wav"),
    ("pt.wav.part", "pt.wav"), ("fp.wav.filepart", "fp.wav"), ("cr.wav.crdownload", "cr.wav"),
    ("lf.wav.lftp", "lf.wav"), (".in.in.wav.", "in.wav"), ("sub/.ps.wav.Ab12Cd", "sub/ps.wav"),
]  # fmt: skip


def _send_via_temp_names(d: dict[str, Path], src: Path) -> set[str]:
    data = src.read_bytes()
    writers = []
    for temp, _ in TEMP_THEN_FINAL:
        (d["watch"] / temp).parent.mkdir(exist_ok=True)
        writers.append(threading.Thread(target=_slow_write, args=(d["watch"] / temp, data)))
        writers[-1].start()
    time.sleep(PAUSE + SETTLE)  # each temp file stays quiet (and open) longer than SETTLE
    for writer in writers:
        writer.join()
    time.sleep(2 * SETTLE)  # and then closed, quiet and whole: still not to be taken
    for temp, final in TEMP_THEN_FINAL:
        os.rename(d["watch"] / temp, d["watch"] / final)
    (d["watch"] / "._st.wav").write_bytes(b"\0\5\26\7")  # a Mac's AppleDouble file over SMB
    (d["watch"] / ".stversions").mkdir()
    (d["watch"] / ".stversions" / "old.wav").write_bytes(data)
    return {Path(final).name for _, final in TEMP_THEN_FINAL}


SENDERS = {
    "cp": _send_cp, "mv-from-sibling": _send_mv, "hard-link": _send_hard_link,
    "rsync": _send_rsync, "rsync-inplace": _send_rsync_inplace,
    "rsync-temp-dir": _send_rsync_temp_dir, "rsync-archive-old-mtime": _send_rsync_archive,
    "rsync-tree": _send_rsync_tree, "temp-name-then-rename": _send_via_temp_names,
}  # fmt: skip


@pytest.mark.parametrize("sender", SENDERS)
def test_each_sender_gives_exactly_one_ready_file(sender: str, dirs: dict[str, Path]) -> None:
    """cp, mv, links, rsync in four modes and temp-name-then-rename senders: each final file is
    ready exactly once, whole, and no temp name ever is."""
    if sender.startswith("rsync") and shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install rsync; .ci/run installs it)")
    src = dirs["outside"] / "source.wav"
    src.write_bytes(wav(200_000))
    # include everything: only the temp-name rules keep partial files out
    with Intake(make_watch(dirs["watch"], include=("*",))) as intake:
        expected = SENDERS[sender](dirs, src)
        intake.assert_exactly(expected)
    for _, r in intake.ready:
        assert r.size == src.stat().st_size and r.incomplete_reason is None
        assert not any(is_temp_name(part) for part in r.path.relative_to(dirs["watch"]).parts)
    if sender == "rsync-archive-old-mtime":
        assert intake.ready[0][1].mtime_ns == 1_000_000_000 * 10**9


WRITER = """
import sys, time
path, size, pauses, pause, hold, reopen = sys.argv[1:7]
size, pauses, pause, hold = int(size), int(pauses), float(pause), float(hold)
data = bytes(size)
header = b"RIFF" + (size - 8).to_bytes(4, "little")
step = size // (pauses + 1) + 1
f = open(path, "wb")
for i in range(0, size, step):
    f.write((header + data[8:])[i:i + step])
    f.flush()
    if reopen == "yes":
        f.close()
    if i + step < size:
        time.sleep(pause)
    if reopen == "yes":
        f = open(path, "ab")
time.sleep(hold)
print(time.monotonic(), flush=True)  # the system-wide clock: comparable with the test's
f.close()
"""


def _writer(path: Path, *, size: int = 300_000, pauses: int = 0, hold: float = 0.0,
            reopen: bool = False) -> float:
    """Writes a RIFF file from a separate process: in pieces with pauses, holding it open at
    the end, or closing and reopening it between pieces; returns time.monotonic() just before
    its last close."""
    run = subprocess.run([sys.executable, "-c", WRITER, str(path), str(size), str(pauses),
                          str(PAUSE), str(hold), "yes" if reopen else "no"],
                         capture_output=True, text=True, check=True)
    return float(run.stdout)


@pytest.mark.parametrize(("pauses", "hold"), [(2, 0.0), (0, 3 * PAUSE)],
                         ids=["slow-writer", "open-then-wait"])
def test_a_writer_pausing_longer_than_the_quiet_period_is_waited_for(
        pauses: int, hold: float, dirs: dict[str, Path]) -> None:
    """A process that keeps the file open, silent for longer than the quiet period, is waited for;
    the file is ready once, whole, after the writer closes it."""
    with Intake(make_watch(dirs["watch"]), probe=whole) as intake:
        closing = _writer(dirs["watch"] / "slow.wav", pauses=pauses, hold=hold)
        intake.assert_exactly({"slow.wav"})
    assert intake.ready_at("slow.wav") > closing  # not during a pause or the hold
    assert intake.ready[0][1].size == 300_000


def test_a_writer_closing_between_pieces_is_caught_by_the_container_probe(
        dirs: dict[str, Path]) -> None:
    """Each close looks finished; the RIFF probe keeps the file waiting until it is whole."""
    with Intake(make_watch(dirs["watch"])) as intake:
        _writer(dirs["watch"] / "pieces.wav", pauses=2, reopen=True)
        intake.assert_exactly({"pieces.wav"})
    assert intake.ready[0][1].size == 300_000
    assert intake.ready[0][1].incomplete_reason is None


def test_a_folder_of_fifty_nested_files_moved_in_is_taken_at_once(dirs: dict[str, Path]) -> None:
    """A folder renamed into the tree is scanned; its files need no quiet wait."""
    batch = dirs["side"] / "batch"
    names = set()
    for i in range(50):
        sub = batch / f"level{i % 5}" / f"deeper{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:02d}.wav").write_bytes(wav(100))
        names.add(f"f{i:02d}.wav")
    with Intake(make_watch(dirs["watch"], settle_seconds=5.0)) as intake:
        moved = time.monotonic()
        os.rename(batch, dirs["watch"] / "batch")
        intake.wait_ready(*names)
        assert max(intake.ready_at(n) for n in names) - moved < 2.0  # no 5 s quiet wait
        intake.assert_exactly(names)


def test_polling_mode_takes_files_after_the_quiet_period(dirs: dict[str, Path]) -> None:
    """With polling, files (copied, moved, written slowly) are ready once after being quiet."""
    src = dirs["outside"] / "source.wav"
    src.write_bytes(wav(50_000))
    with Intake(make_watch(dirs["watch"], polling=True), probe=whole) as intake:
        subprocess.run(["cp", str(src), str(dirs["watch"] / "copied.wav")], check=True)
        shutil.copy(src, dirs["side"] / "moved.wav")
        os.rename(dirs["side"] / "moved.wav", dirs["watch"] / "moved.wav")
        _writer(dirs["watch"] / "growing.wav", pauses=2)
        intake.assert_exactly({"copied.wav", "moved.wav", "growing.wav"})
        assert intake.watchset.status()[0]["mode"] == "polling"
    assert {a.event for a in intake.arrivals} <= {"scan", "poll"}
    assert dict(Counter(r.size for _, r in intake.ready)) == {50_044: 2, 300_000: 1}


def test_a_burst_overflowing_the_inotify_queue_is_taken_exactly_once(dirs: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """More files than the kernel's inotify queue can announce, created while watchdog's threads
    cannot run, overflow it; the watcher says so, and the rescan that follows makes each file
    ready exactly once."""
    count = burst_to_overflow()
    if count > MAX_BURST_FILES:
        pytest.skip(f"overflowing this host's inotify queue takes {count:,} files "
                    f"(fs.inotify.max_queued_events); the test stops at {MAX_BURST_FILES:,}")
    done = tmp_path / "burst-done"
    burst = f"""
import os
for i in range({count}):
    fd = os.open("{dirs['watch']}/b%05d.wav" % i, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x")
    os.close(fd)
open("{done}", "w").close()
"""
    libc = ctypes.PyDLL(None)  # calls through PyDLL keep the GIL
    switch = sys.getswitchinterval()
    with Intake(make_watch(dirs["watch"]), probe=whole) as intake:
        writer = subprocess.Popen([sys.executable, "-c", burst])
        # Hold the GIL until the burst is written, so watchdog's reader cannot drain the queue:
        # C calls that keep it, and no forced switch in the bytecode between them.
        sys.setswitchinterval(60)
        try:
            for _ in range(1500):
                if libc.access(os.fsencode(done), os.F_OK) == 0:
                    break
                libc.usleep(20_000)
        finally:
            sys.setswitchinterval(switch)
        writer.wait()
        wait_for(lambda: len(intake.counts()) >= count, 60, f"{count:,} files ready")
        intake.quiesce()
        counts = intake.counts()
        assert len(counts) == count and set(counts.values()) == {1}
        assert intake.watchset.status()[0]["overflows"] >= 1
        assert "inotify_overflow" in intake.events("warning")


def test_links_fifos_sockets_and_devices_are_never_taken(dirs: dict[str, Path]) -> None:
    """Symlinks out of the tree (to files or folders), symlinks inside it and special files
    are skipped, by the scan and when they appear; a FIFO is never opened (it would block)."""
    root, outside = dirs["watch"], dirs["outside"]
    (outside / "secret.wav").write_bytes(wav(10))
    (outside / "inner").mkdir()
    (outside / "inner" / "deep.wav").write_bytes(wav(10))

    def plant(prefix: str) -> None:
        (root / f"{prefix}real.wav").write_bytes(wav(10))
        (root / f"{prefix}out.wav").symlink_to(outside / "secret.wav")
        (root / f"{prefix}in.wav").symlink_to(root / f"{prefix}real.wav")
        (root / f"{prefix}dir").symlink_to(outside / "inner")
        os.mkfifo(root / f"{prefix}pipe.wav")
        with contextlib.suppress(PermissionError):  # containers may forbid device nodes
            os.mknod(root / f"{prefix}null.wav", stat.S_IFCHR | 0o600, os.makedev(1, 3))

    plant("early-")
    with socket.socket(socket.AF_UNIX) as sock, Intake(make_watch(root)) as intake:
        plant("late-")
        sock.bind(str(root / "late-sock.wav"))
        intake.watchset.rescan()
        intake.assert_exactly({"early-real.wav", "late-real.wav"})


ODD_NAMES = ["with space.wav", "new\nline.wav", "ünïcødé 录音.wav", "-leading-dash.wav",
             "UPPER.WAV", "Mixed.Mp3", "b" * 251 + ".wav"]


def test_odd_names_are_taken_by_the_scan_and_by_events(dirs: dict[str, Path]) -> None:
    """Spaces, newlines, unicode, a leading dash, 255-byte names, upper-case extensions and
    bytes that are not UTF-8 all work, found by the first scan and by inotify."""
    root = dirs["watch"]
    src = dirs["outside"] / "s.wav"
    src.write_bytes(wav(1000))
    bad_utf8 = os.fsdecode(b"\xff\xfe-latin.wav")
    early = ["early " + n if len(n) < 200 else "a" * 251 + ".wav" for n in ODD_NAMES]
    for name in [*early, "early" + bad_utf8]:
        shutil.copy(src, root / name)
    with Intake(make_watch(root)) as intake:
        for name in [*ODD_NAMES, bad_utf8]:
            subprocess.run(["cp", str(src), os.fsencode(root / name)], check=True)
        intake.assert_exactly({*early, "early" + bad_utf8, *ODD_NAMES, bad_utf8})
    assert len(os.fsencode("a" * 251 + ".wav")) == 255


def test_files_copied_in_one_after_another_are_each_ready_once_and_whole(
        dirs: dict[str, Path]) -> None:
    """Sixty files copied in one at a time, each after the previous was ready, are each ready
    once at their full size (how fast: ``python -m bench latency``, p99 < 150 ms)."""
    src = dirs["outside"] / "s.wav"
    src.write_bytes(wav(20_000))
    names = {f"l{i}.wav" for i in range(60)}
    with Intake(make_watch(dirs["watch"])) as intake:
        for name in sorted(names):
            subprocess.run(["cp", str(src), str(dirs["watch"] / name)], check=True)
            intake.wait_ready(name, timeout=5)
        intake.assert_exactly(names)
    assert {r.size for _, r in intake.ready} == {src.stat().st_size}


# -- inotify limits: a child process in a user namespace of its own ------------------------------

LIMIT_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.support import make_watch
from tests.test_watcher import Intake, wav
setting, value, root, scenario = sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]
Path("/proc/sys/user", setting).write_text(value)
with Intake(make_watch(root)) as intake:
    before = intake.watchset.status()[0]["mode"]
    target = root / "new" / "deeper" if scenario == "runtime" else root / "a" / "b" / "c"
    target.mkdir(parents=True, exist_ok=True)
    (target / "late.wav").write_bytes(wav(10))
    intake.wait_ready("late.wav")
    intake.quiesce()
    print(json.dumps({"before": before, "status": intake.watchset.status(),
                      "alive": intake.watchset.alive(), "ready": dict(intake.counts()),
                      "errors": [[e["event"], e.get("reason", "")] for e in intake.logs
                                 if e["log_level"] == "error"]}))
"""


def _userns_ok() -> bool:
    try:
        run = subprocess.run(
            ["unshare", "-Ur", "sh", "-c", "echo 7 > /proc/sys/user/max_inotify_watches"],
            capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


@pytest.mark.skipif(not _userns_ok(), reason="needs user namespaces (unshare -Ur) to lower "
                    "inotify limits for one process tree only")
@pytest.mark.parametrize(("setting", "value", "scenario", "mode_before"), [
    ("max_inotify_watches", "0", "root", "polling-fallback"),
    ("max_inotify_watches", "2", "sub-folders", "polling-fallback"),
    ("max_inotify_watches", "1", "runtime", "inotify"),
    ("max_inotify_instances", "0", "instances", "polling-fallback"),
], ids=["root-watch", "sub-folder-watch", "folder-created-later", "instance-limit"])
def test_inotify_limits_fall_back_to_polling_loudly(
        setting: str, value: str, scenario: str, mode_before: str, dirs: dict[str, Path]) -> None:
    """When inotify runs out of watches or instances (for the root, a sub-folder, or a folder
    made later) the watch polls instead, logs an error, says so in status, and misses nothing."""
    root = dirs["watch"]
    if scenario == "sub-folders":
        (root / "a" / "b" / "c").mkdir(parents=True)
    run = subprocess.run(
        ["unshare", "-Ur", sys.executable, "-c", LIMIT_CHILD, str(REPO), setting, value,
         str(root), scenario], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["before"] == mode_before
    assert result["ready"] == {"late.wav": 1}
    [status] = result["status"]
    assert status["mode"] == "polling-fallback" and status["alive"] and result["alive"]
    assert "inotify limit reached" in status["reason"]
    [(event, reason)] = result["errors"]
    assert event == "inotify_limit_fallback"
    assert ("ENOSPC" if setting == "max_inotify_watches" else "EMFILE") in reason


# -- the watch set: reload, rescans, failures, stopping ----------------------------------------

def test_reconfigure_adds_changes_and_removes_watches_without_losing_files(
        dirs: dict[str, Path], tmp_path: Path) -> None:
    """A new watch is scanned, a changed one re-scanned under its new settings, a removed one
    stops; files already taken are not taken again."""
    a, b = dirs["watch"], tmp_path / "second"
    b.mkdir()
    (a / "a1.wav").write_bytes(wav(10))
    (a / "a-note.txt").write_text("x")
    (b / "b1.wav").write_bytes(wav(10))
    wa, wb = make_watch(a), make_watch(b)
    with Intake(wa) as intake:
        intake.wait_ready("a1.wav")
        intake.watchset.reconfigure([wa, wb])
        intake.wait_ready("b1.wav")
        wa2 = make_watch(a, include=(*DEFAULT_INCLUDE, "*.txt"))
        intake.watchset.reconfigure([wa2, wb])
        intake.wait_ready("a-note.txt")
        (a / "a2.wav").write_bytes(wav(10))
        intake.wait_ready("a2.wav")
        intake.watchset.reconfigure([wb])
        (a / "a3.wav").write_bytes(wav(10))
        (b / "b2.wav").write_bytes(wav(10))
        intake.assert_exactly({"a1.wav", "a-note.txt", "a2.wav", "b1.wav", "b2.wav"})
        assert [s["path"] for s in intake.watchset.status()] == [str(b)]
    by_name = {r.path.name: r for _, r in intake.ready}
    assert by_name["a2.wav"].watch == wa2 and by_name["a1.wav"].watch == wa


def test_periodic_rescans_offer_files_again_but_they_are_ready_once(dirs: dict[str, Path]) -> None:
    """Every rescan offers each file again; the settler hands each out only once."""
    (dirs["watch"] / "x.wav").write_bytes(wav(10))
    with Intake(make_watch(dirs["watch"]), rescan_interval=0.2) as intake:
        wait_for(lambda: sum(a.event == "scan" for a in intake.arrivals) >= 3, 10,
                 "three scans")
        intake.quiesce()
        assert intake.counts() == {"x.wav": 1}


def test_a_failing_sink_is_logged_and_watching_goes_on(dirs: dict[str, Path]) -> None:
    """An exception from the sink never reaches watchdog's threads: it is logged, and the
    next arrival is delivered."""
    got: list[Arrival] = []

    def sink(arrival: Arrival) -> None:
        if arrival.path.name == "bad.wav":
            raise RuntimeError("boom")
        got.append(arrival)

    watchset = WatchSet([make_watch(dirs["watch"])], sink, rescan_interval=300)
    with capture_logs() as logs:
        watchset.start()
        try:
            (dirs["watch"] / "bad.wav").write_bytes(b"")
            (dirs["watch"] / "good.wav").write_bytes(b"")
            wait_for(lambda: any(a.path.name == "good.wav" and a.event == "closed" for a in got),
                     5, "good.wav's close event")
            assert "arrival_sink_failed" in [e["event"] for e in logs if e["log_level"] == "error"]
            assert watchset.alive()
        finally:
            watchset.stop()
    assert not watchset.alive()


def test_a_watch_is_busy_until_its_events_and_scans_are_passed_on(dirs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """status() says a watch is busy while an event waits for the sink or a scan of a folder
    moved in runs, and not busy once both are through; a polling watch counts its rounds."""
    entered, release = threading.Event(), threading.Event()
    got: list[Arrival] = []

    def sink(arrival: Arrival) -> None:
        if arrival.path.name.startswith("held"):
            entered.set()
            release.wait(10)
        got.append(arrival)

    polled = tmp_path / "polled"
    polled.mkdir()
    watchset = WatchSet([make_watch(dirs["watch"]), make_watch(polled, polling=True)], sink,
                        rescan_interval=300)
    watchset.start()
    try:
        def busy(name: str) -> bool:
            return next(bool(w["busy"]) for w in watchset.status()
                        if Path(w["path"]).name == name)

        wait_for(lambda: not watchset.busy(), 5, "the start to be through")
        (dirs["watch"] / "held.wav").write_bytes(b"")
        assert entered.wait(5)
        assert busy("watch") and watchset.busy() and not busy("polled")
        folder = dirs["side"] / "folder"
        folder.mkdir()
        (folder / "inside.wav").write_bytes(b"")
        os.rename(folder, dirs["watch"] / "folder")  # its scan waits behind the held event
        assert busy("watch")
        release.set()
        wait_for(lambda: not watchset.busy(), 5, "the watch to pass everything on")
        assert {a.path.name for a in got} >= {"held.wav", "inside.wav"}
        polls = next(w["polls"] for w in watchset.status() if Path(w["path"]).name == "polled")
        wait_for(lambda: next(w["polls"] for w in watchset.status()
                              if Path(w["path"]).name == "polled") >= polls + 2, 5,
                 "two more poll rounds")
    finally:
        release.set()
        watchset.stop()


def test_a_deleted_or_replaced_root_folder_is_watched_again(dirs: dict[str, Path]) -> None:
    """When the watched folder is deleted and made again, or renamed away and replaced, the
    watch restarts on the new folder and takes its files."""
    root = dirs["watch"]
    with Intake(make_watch(root)) as intake:
        shutil.rmtree(root)
        time.sleep(0.3)
        root.mkdir()
        (root / "after-delete.wav").write_bytes(wav(10))
        intake.wait_ready("after-delete.wav", timeout=5)
        os.rename(root, dirs["side"] / "old-root")
        root.mkdir()
        (root / "after-replace.wav").write_bytes(wav(10))
        intake.wait_ready("after-replace.wav", timeout=5)
        assert intake.watchset.alive()
        assert "watch_restarted" in intake.events("warning")


def test_status_reports_every_watch_and_a_missing_folder_is_retried(dirs: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    """status() lists each watch with its mode and liveness; a folder missing at start is
    reported, retried, and watched once it exists."""
    polled = tmp_path / "polled"
    polled.mkdir()
    missing = tmp_path / "missing"
    with Intake(make_watch(dirs["watch"]), make_watch(polled, polling=True),
                make_watch(missing)) as intake:
        status = {Path(s["path"]).name: s for s in intake.watchset.status()}
        assert status["watch"]["mode"] == "inotify" and status["watch"]["alive"]
        assert status["polled"]["mode"] == "polling" and status["polled"]["alive"]
        assert not status["missing"]["alive"] and "No such file" in status["missing"]["reason"]
        assert intake.watchset.alive()  # being retried: a restart of the daemon would not help
        assert "watch_unavailable" in intake.events("error")
        missing.mkdir()
        (missing / "late.wav").write_bytes(wav(10))
        intake.wait_ready("late.wav", timeout=5)
        assert intake.watchset.alive()


def test_arrivals_carry_what_announced_them(dirs: dict[str, Path]) -> None:
    """Scan, close-write, rename and create arrivals are labelled as such, with monotonic times."""
    root = dirs["watch"]
    (root / "old.wav").write_bytes(b"")
    with Intake(make_watch(root)) as intake:
        (root / "new.wav").write_bytes(b"")
        (dirs["side"] / "mv.wav").write_bytes(b"")
        os.rename(dirs["side"] / "mv.wav", root / "mv.wav")
        os.link(root / "new.wav", root / "link.wav")
        intake.wait_ready("old.wav", "new.wav", "mv.wav", "link.wav")
    kinds = {(a.path.name, a.event) for a in intake.arrivals}
    assert {("old.wav", "scan"), ("new.wav", "closed"), ("mv.wav", "moved"),
            ("link.wav", "created")} <= kinds
    assert all(a.at <= time.monotonic() and a.path.is_absolute() for a in intake.arrivals)


def _inotify_watches() -> int:
    """How many inotify watches this process holds (from /proc/self/fdinfo)."""
    count = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{fd}") as f:
            count += sum(line.startswith("inotify wd:") for line in f)
    return count


def test_hidden_and_excluded_folders_cost_no_inotify_watches(dirs: dict[str, Path]) -> None:
    """Only folders the watch takes files from get a watch, also when made or renamed later."""
    root = dirs["watch"]
    for rel in ("a/b", "c", "processed/2024/01", "processed/2024/02", ".stversions/x/y"):
        (root / rel).mkdir(parents=True)
    before = _inotify_watches()
    with Intake(make_watch(root, exclude=("processed",))) as intake:
        assert _inotify_watches() - before == 4  # the root, a, a/b, c
        (root / "processed" / "2025").mkdir()
        (root / ".incoming" / "deep").mkdir(parents=True)
        (root / ".incoming" / "deep" / "x.wav").write_bytes(wav(10))
        os.rename(root / ".incoming", root / "incoming")
        intake.wait_ready("x.wav")
        assert _inotify_watches() - before == 6  # and incoming, incoming/deep


def test_a_symlinked_root_is_watched_and_reported_under_its_configured_path(
        dirs: dict[str, Path], tmp_path: Path) -> None:
    """A watch configured as a symlink to a folder gets events, and paths below the link."""
    link = tmp_path / "drop"
    link.symlink_to(dirs["watch"])
    with Intake(make_watch(link)) as intake:
        (dirs["watch"] / "sub").mkdir()
        (dirs["watch"] / "sub" / "a.wav").write_bytes(wav(10))
        intake.assert_exactly({"a.wav"})
    assert intake.ready[0][1].path == link / "sub" / "a.wav"
    assert intake.watchset.status() == []


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("mimo-watchd")]
