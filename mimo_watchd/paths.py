"""Whether a path lies inside a root: the one place that decides it.

Purely lexical, on absolute normalised paths (``Path`` objects, or strings from
``os.path.realpath``): resolve both sides first wherever symlinks matter.
"""

from __future__ import annotations

import os


def relative_to(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root``, '/'-joined ("" for the root itself); None when outside."""
    root_text, path_text = os.fspath(root), os.fspath(path)
    if path_text == root_text:
        return ""
    prefix = root_text.rstrip("/") + "/"
    return path_text[len(prefix):] if path_text.startswith(prefix) else None


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when ``path`` is ``root`` or lies below it."""
    return relative_to(root, path) is not None
