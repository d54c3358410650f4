"""Output folders reached through symlinks that lead into a watch are refused, by real path,
in `check`, at the daemon's start and on reload (issue 12 item 2)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mimo_watchd.config import load
from mimo_watchd.emulator import Emulator
from mimo_watchd.errors import ConfigError
from tests.daemon_support import DaemonProcess, run_cli
from tests.support import Deployment, wait_for


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("key", ["processed_dir", "failed_dir", "output_dir"])
def test_an_output_folder_through_a_symlink_into_the_watch_is_refused(
        tmp_path: Path, key: str) -> None:
    """``out -> inbox``: ``out/done`` lies inside the watch by its real path, so it is refused
    although the configured path does not name the watch."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "inbox")
    folders = {"processed_dir": "processed", "failed_dir": "failed", key: "out/done"}
    text = "watches:\n  - path: inbox\n" + "".join(f"    {k}: {v}\n" for k, v in folders.items())
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    (problem,) = info.value.problems
    assert problem.startswith(f"watches[0].{key}: ") and "inside the watched folder" in problem
    assert str(tmp_path / "inbox" / "done") in problem  # the real path it leads to


def test_a_watch_reached_through_a_symlink_is_compared_by_real_path(tmp_path: Path) -> None:
    """A watch configured through a symlink (/srv/drop -> /data/drop) still refuses an output
    folder inside its real folder, and the exclude globs apply to the real relative path."""
    (tmp_path / "data" / "drop").mkdir(parents=True)
    (tmp_path / "srv").symlink_to(tmp_path / "data")
    text = """
watches:
  - path: srv/drop
    processed_dir: data/drop/done
    failed_dir: failed
"""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert any("processed_dir" in p and "inside" in p for p in info.value.problems)
    ok = load(write(tmp_path, text + "    exclude: ['done/**']\n"))
    assert ok.watches[0].processed_dir == tmp_path / "data" / "drop" / "done"


def test_an_output_folder_beside_the_watch_through_a_symlink_is_fine(tmp_path: Path) -> None:
    """A symlink that leads out of the watch is no problem: only the real path counts."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "inbox-out").symlink_to(tmp_path / "elsewhere")
    s = load(write(tmp_path, """
watches:
  - path: inbox
    processed_dir: inbox-out/processed
    failed_dir: failed
"""))
    assert s.watches[0].processed_dir == tmp_path / "inbox-out" / "processed"


@pytest.mark.e2e
def test_check_start_and_reload_refuse_a_symlinked_processed_folder(
        emu: Emulator, tmp_path: Path) -> None:
    """`check` exits 78, the daemon refuses to start (78), and a running daemon rejects a
    reload that points processed_dir through a symlink into its watch, and keeps running."""
    layout = Deployment(tmp_path / "d", test_timing=True)
    (tmp_path / "loop").symlink_to(layout.inbox)
    layout.write_config(emu.url, watch={"processed_dir": str(tmp_path / "loop" / "processed")})
    checked = run_cli(layout, "check", "-c", str(layout.config))
    assert checked.returncode == 78, checked.stdout + checked.stderr
    assert "watches[0].processed_dir" in checked.stderr
    d = DaemonProcess(layout)
    assert d.wait(30) == 78, d.text()
    assert "inside the watched folder" in d.text()

    layout.write_config(emu.url)
    d = DaemonProcess(layout)
    d.wait_ready()
    try:
        layout.write_config(emu.url, watch={"processed_dir": str(tmp_path / "loop" / "p2")})
        d.signal(signal.SIGHUP)
        (rejected,) = wait_for(lambda: d.saw("reload.rejected"), 20, what="the rejection")
        assert any("watches[0].processed_dir" in p for p in rejected["problems"])
        assert not d.saw("reload.done")
        assert not (layout.inbox / "p2").exists()
    finally:
        assert d.stop() == 0, d.text()
