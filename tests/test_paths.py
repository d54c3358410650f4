"""``paths``: the one answer to "is this path inside the root?"."""

from __future__ import annotations

from pathlib import Path

from mimo_watchd.paths import is_within, relative_to


def test_relative_to_names_what_lies_below_and_nothing_else() -> None:
    """Below the root: its relative path; the root itself: ""; a sibling sharing a prefix of
    the name, or anything above: None."""
    assert relative_to("/srv/in", "/srv/in/a/b.wav") == "a/b.wav"
    assert relative_to(Path("/srv/in"), Path("/srv/in")) == ""
    assert relative_to("/srv/in", "/srv/inbox/b.wav") is None
    assert relative_to("/srv/in", "/srv") is None
    assert relative_to("/", "/x/y") == "x/y"


def test_is_within_includes_the_root() -> None:
    """A path is within its own root and within every folder above it."""
    assert is_within(Path("/a/b"), Path("/a/b")) and is_within(Path("/a/b/c"), Path("/"))
    assert not is_within(Path("/a/bc"), Path("/a/b"))
