"""What a reload changes, and which changed options wait for a restart."""

from __future__ import annotations

from pathlib import Path

from mimo_watchd.config import load
from mimo_watchd.config.changes import RESTART_ONLY, applied, changed


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("watches:\n  - {path: in, processed_dir: done, failed_dir: failed}\n"
                    + extra, encoding="utf-8")
    return path


def test_changed_names_options_by_their_dotted_paths(tmp_path: Path) -> None:
    """Changed options are named as in the config file; an unchanged file changes nothing."""
    old = load(_config(tmp_path, ""))
    assert changed(old, load(_config(tmp_path, ""))) == []
    new = load(_config(tmp_path, "log: {level: debug}\napi: {model: m2}\n"
                                 "pause_probe_seconds: 5\n"))
    assert changed(old, new) == ["api.model", "pause_probe_seconds", "log.level"]


def test_options_built_at_start_keep_their_old_values(tmp_path: Path) -> None:
    """A reload applies what it can and keeps every restart-only option as it was, naming the
    ones the file changed."""
    old = load(_config(tmp_path, ""))
    new = load(_config(tmp_path, "state_dir: elsewhere\nmetrics: {listen: '127.0.0.1:9999'}\n"
                                 "api: {max_concurrency: 7, api_key_env: OTHER, model: m2}\n"
                                 "rescan_interval_seconds: 10\nlog: {format: json}\n"))
    result, waiting = applied(old, new)
    assert waiting == ["api.api_key_env", "api.max_concurrency", "state_dir",
                       "rescan_interval_seconds", "metrics.listen"]
    assert set(waiting) <= set(RESTART_ONLY)
    assert changed(old, result) == ["api.model", "log.format"]
    assert result.state_dir == old.state_dir
    assert result.api.max_concurrency == old.api.max_concurrency == 16
