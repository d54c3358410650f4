"""The logical checks: what needs several options at once, on settings that are valid one by one.

``problems`` is the one place for them; ``load`` (and so ``check`` and a reload) and the
daemon's start all call it through :func:`require_consistent`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mimo_watchd import notifyurls, templates
from mimo_watchd.config.settings import Settings, WatchSettings
from mimo_watchd.errors import ConfigError
from mimo_watchd.names import name_filter
from mimo_watchd.paths import is_within, relative_to

_OUTPUT_FOLDERS = ("processed_dir", "failed_dir", "output_dir")


def problems(settings: Settings) -> list[str]:
    """Hooks with nothing to run, nested watches, output folders or the state folder inside a
    watched tree; each as ``path: message``."""
    found: list[str] = []
    watches = settings.watches
    for i, w in enumerate(watches):
        for hook in ("on_success", "on_failure"):
            h = getattr(w, hook)
            if h is not None and not h.command and not h.webhook:
                found.append(f"watches[{i}].{hook}: needs a command or a webhook")
        for j, other in enumerate(watches):
            if i != j and is_within(other.path, w.path):
                if other.path == w.path:
                    if i < j:
                        found.append(f"watches[{j}].path: same folder as watches[{i}].path")
                else:
                    found.append(f"watches[{j}].path: lies inside watches[{i}].path "
                                 f"({w.path}); a watch may not contain another")
    found += outputs_inside_watches(watches)
    found += templates_into_watches(watches)
    found += notify_problems(watches)
    for i, w in enumerate(watches):
        if is_within(settings.state_dir, w.path):
            found.append(f"state_dir: {settings.state_dir} lies inside watches[{i}].path")
    return found


def outputs_inside_watches(watches: tuple[WatchSettings, ...]) -> list[str]:
    """Output folders that lie inside a watched tree it does not exclude, by real path.

    Real paths, because the daemon writes where a path leads: ``processed_dir: /out/done``
    with ``/out -> /srv/inbox`` puts the outputs into the watch, and the daemon would take
    them again forever. A folder not yet created resolves as far as it exists.
    """
    found: list[str] = []
    for i, w in enumerate(watches):
        root = Path(os.path.realpath(w.path))
        for key in _OUTPUT_FOLDERS:
            for j, other in enumerate(watches):
                folder = getattr(other, key)
                if folder is None:
                    continue
                target = Path(os.path.realpath(folder))
                if not is_within(target, root):
                    continue
                via = "" if target == folder else f" (by its real path {target})"
                if target == root:
                    found.append(f"watches[{j}].{key}: must not be the watched folder itself"
                                 f"{via}")
                elif not _excluded(target, root, w):
                    found.append(
                        f"watches[{j}].{key}: {folder}{via} lies inside the watched folder "
                        f"watches[{i}].path ({w.path}); move it out or exclude it "
                        f"(e.g. exclude: ['{target.relative_to(root).as_posix()}/**'])")
    return found


def templates_into_watches(watches: tuple[WatchSettings, ...]) -> list[str]:
    """Path templates that could put files inside a watched tree, by real path.

    A template cannot leave its folder, so this needs care only where that folder contains a
    watch (``processed_dir: /data`` beside ``/data/inbox``): there the folders the template
    always begins with must lead elsewhere before any field (which could be anything) comes.
    """
    found: list[str] = []
    for i, w in enumerate(watches):
        for key, folder in (("processed_path", w.processed_dir),
                            ("output_path", w.output_dir or w.processed_dir)):
            text = getattr(w, key)
            if text is None:
                continue
            lead = templates.leading_folders(text)
            for j, other in enumerate(watches):
                rel = relative_to(os.path.realpath(folder), os.path.realpath(other.path))
                if not rel:
                    continue  # not inside it (or the folder itself: refused above)
                if all(a == b for a, b in zip(lead, rel.split("/"), strict=False)):
                    found.append(
                        f"watches[{i}].{key}: {text!r} could put files inside the watched "
                        f"folder watches[{j}].path ({other.path}), which lies inside {folder}; "
                        "begin it with a folder that leads elsewhere (e.g. 'done/...')")
    return found


def notify_problems(watches: tuple[WatchSettings, ...]) -> list[str]:
    """Notifications that cannot be sent: Apprise missing (naming the extra), or a URL it does
    not understand (named by its place and scheme, never its text: it holds secrets)."""
    wanted = [(i, w.notify) for i, w in enumerate(watches) if w.notify is not None]
    if not wanted:
        return []
    if not notifyurls.available():
        return [f"watches[{i}].notify: needs Apprise, which is not installed: "
                f"{notifyurls.EXTRA}" for i, _ in wanted]
    return [f"watches[{i}].notify.urls[{k}]: {why}" for i, n in wanted
            for k, url in enumerate(n.urls) if (why := notifyurls.problem(url))]


def hook_problems(settings: Settings) -> list[str]:
    """Hook commands whose program is missing or not executable, as ``path: message``.

    ``check`` refuses them; the daemon only warns at start and reload (a hook never stops the
    real work, and its program may live on a share that is mounted later)."""
    found: list[str] = []
    for i, w in enumerate(settings.watches):
        for hook in ("on_success", "on_failure"):
            h = getattr(w, hook)
            if h is None or not h.command:
                continue
            program = h.command[0]
            if "/" in program:
                if not os.path.isfile(program):
                    found.append(f"watches[{i}].{hook}.command: {program} does not exist")
                elif not os.access(program, os.X_OK):
                    found.append(f"watches[{i}].{hook}.command: {program} is not executable")
            elif shutil.which(program) is None:
                found.append(f"watches[{i}].{hook}.command: {program} is not found on PATH "
                             f"({os.environ.get('PATH', '')})")
    return found


def require_consistent(settings: Settings, source: str | None = None) -> None:
    """Raises ConfigError listing every logical problem of ``settings``, if any."""
    found = problems(settings)
    if found:
        raise ConfigError(found, source)


def _excluded(target: Path, root: Path, w: WatchSettings) -> bool:
    """True when the watch never looks into the folder ``target`` inside its (real) ``root``.

    Uses the watcher's own name rules (case-insensitive, .gitignore-like globs, hidden folders
    never walked), so the check agrees exactly with what would be watched.
    """
    rules = name_filter(w.recursive, w.include, w.exclude)
    parts = target.relative_to(root).parts
    return any(not rules.takes_dir("/".join(parts[: i + 1])) for i in range(len(parts)))
