"""Templates an operator writes: where processed audio and sidecars go, what a message says.

Both are Python format strings (``"{arrived:%Y/%m}/{relpath}/{stem}{ext}"``) whose fields
are plain names from a fixed set: no attribute or index access, no conversions, so a template
can never reach into the program. ``{arrived:FORMAT}`` takes an ``strftime`` format; the
other fields may carry a string format (``{stem:.40}``). A template is checked once, at load
(``check_path``, ``check_message``: a ValueError says what is wrong, the validator adds the
key path), by rendering it with sample values.

**Path templates** name a file below its output folder. The result is normalised: empty and
``.`` components go (``{relpath}`` is empty for a file at the top of its watch), and a result
that is absolute, climbs out with ``..`` or names no file is refused, at load for what the
template itself says and again for each file (``render_path``: a file's name could be
``...wav``, whose stem is ``..``).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from mimo_watchd.errors import JobError

PATH_FIELDS = ("stem", "ext", "name", "relpath", "watch", "language", "arrived")
MESSAGE_FIELDS = ("name", "path", "original_path", "watch", "outcome", "transcript", "reason",
                  "duration", "cost", "summary", "language")
DATED = frozenset({"arrived"})
_FORMATTER = string.Formatter()

# Values a path template is tried with at load: a file at the top and one in sub-folders.
_SAMPLES: tuple[dict[str, Any], ...] = (
    {"stem": "call", "ext": ".wav", "name": "call.wav", "relpath": "", "watch": "inbox",
     "language": "auto", "arrived": datetime(2026, 12, 1, 9, 30)},
    {"stem": "memo", "ext": "", "name": "memo", "relpath": "a/b", "watch": "inbox",
     "language": "zh", "arrived": datetime(2027, 1, 31, 23, 59)},
)
_MESSAGE_SAMPLE = dict.fromkeys(MESSAGE_FIELDS, "x")  # every message field is text


def fields(text: str) -> list[str]:
    """The fields ``text`` uses, in order; ValueError for a malformed template."""
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); write {{{{ and }}}} for braces") \
            from exc
    return [name for _, name, _, _ in parsed if name is not None]


def _check_fields(text: str, allowed: Iterable[str]) -> None:
    known = tuple(allowed)
    for _, name, spec, conversion in _FORMATTER.parse(text):
        if name is None:
            continue
        if name not in known:
            raise ValueError(f"unknown field {{{name}}} (known: "
                             f"{', '.join('{' + k + '}' for k in known)})")
        if conversion:
            raise ValueError(f"{{{name}!{conversion}}}: conversions are not supported")
        if name in DATED and not spec:
            raise ValueError(f"{{{name}}} needs a date format, e.g. {{{name}:%Y-%m-%d}}")


def check_path(text: str) -> None:
    """The load-time check of a path template (ValueError saying what is wrong)."""
    fields(text)
    _check_fields(text, PATH_FIELDS)
    if text.startswith("/"):
        raise ValueError("must be relative to its folder, not an absolute path")
    for sample in _SAMPLES:
        try:
            rendered = text.format_map(sample)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"cannot be rendered: {exc}") from exc
        _normalised(rendered, text)


def render_path(text: str, values: Mapping[str, Any]) -> str:
    """The relative path ``text`` gives for ``values`` ('/'-joined, normalised); JobError when
    it would leave its folder or names no file."""
    return _normalised(text.format_map(values), text, error=JobError)


def _normalised(rendered: str, text: str, *, error: type[Exception] = ValueError) -> str:
    # (a leading '/' comes from an empty field: the template itself is never absolute)
    parts = [p for p in rendered.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise error(f"{text!r} gives {rendered!r}, which leaves its folder ('..')")
    if not parts or rendered.endswith("/"):
        raise error(f"{text!r} gives {rendered!r}, which names no file")
    return "/".join(parts)


def leading_folders(text: str) -> list[str]:
    """The folders a path template always begins with: its components before any field."""
    literal = ""
    for text_part, name, _, _ in _FORMATTER.parse(text):
        literal += text_part
        if name is not None:
            break
    return [p for p in literal.split("/")[:-1] if p not in ("", ".")]


def check_message(text: str) -> None:
    """The load-time check of a message template (ValueError saying what is wrong)."""
    fields(text)
    _check_fields(text, MESSAGE_FIELDS)
    try:
        text.format_map(_MESSAGE_SAMPLE)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"cannot be rendered: {exc}") from exc


def render_message(text: str, values: Mapping[str, Any]) -> str:
    """What a message template says for ``values`` (checked at load, so it renders)."""
    return text.format_map(values).strip()
