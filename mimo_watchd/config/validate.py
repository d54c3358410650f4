"""The validator: walks a parsed YAML document against the settings classes.

Every problem is collected with its key path (``watches[1].path: is required``), unknown keys
are errors, and a bad value is replaced by its default so that the walk goes on and finds the
rest. Relative paths resolve against ``base`` (the config file's folder).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from mimo_watchd.config.schema import Opt, options

T = TypeVar("T")


class Validator:
    """Collects the problems of one document while building its settings."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def build(self, path: str, raw: Any, cls: type[T]) -> T:
        """``cls`` from the mapping ``raw`` (an instance that is only meaningful while
        ``problems`` is empty: bad values are replaced to keep walking)."""
        return cls(**self.section(path, raw, options(cls)))

    def section(self, path: str, raw: Any, schema: Mapping[str, Opt]) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem(path or "(top level)", f"must be a mapping, not {_kind(raw)}")
            raw = {}
        for key in raw:
            if key not in schema:
                self.problem(_join(path, str(key)), "unknown option")
        out: dict[str, Any] = {}
        for key, opt in schema.items():
            sub = _join(path, key)
            if key in raw:
                out[key] = self.value(sub, raw[key], opt)
            elif opt.required:
                self.problem(sub, "is required")
                out[key] = self.placeholder(opt)
            elif opt.kind == "section" and not opt.nullable:
                out[key] = self.build(sub, {}, _section(opt))
            else:
                out[key] = self.converted(opt, opt.default)
        return out

    def value(self, path: str, raw: Any, opt: Opt) -> Any:
        if raw is None:
            if opt.nullable:
                return None
            self.problem(path, "must not be empty")
            return self.placeholder(opt)
        kind = opt.kind
        if kind == "section":
            return self.build(path, raw, _section(opt))
        if kind == "list[section]":
            if not isinstance(raw, list) or not raw:
                self.problem(path, "must be a non-empty list")
                return ()
            return tuple(self.build(f"{path}[{i}]", item, _section(opt))
                         for i, item in enumerate(raw))
        if kind == "list[str]":
            if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
                self.problem(path, "must be a list of non-empty strings")
                return self.placeholder(opt)
            for i, item in enumerate(raw):
                self.checked(f"{path}[{i}]", item, opt)
            return tuple(raw)
        if kind == "bool":
            if not isinstance(raw, bool):
                self.problem(path, f"must be true or false, not {raw!r}")
                return self.placeholder(opt)
            return raw
        if kind in ("int", "float"):
            return self.number(path, raw, opt)
        if not isinstance(raw, str) or not raw.strip():
            self.problem(path, f"must be a non-empty string, not {raw!r}")
            return self.placeholder(opt)
        if not self.checked(path, raw, opt):
            return self.placeholder(opt)
        return self.resolve(raw) if kind == "path" else raw

    def checked(self, path: str, raw: str, opt: Opt) -> bool:
        """Whether a string (or a list's item) is one of the option's choices and passes its
        check; a problem is noted when not."""
        if opt.choices and raw not in opt.choices:
            self.problem(path, f"must be one of {', '.join(opt.choices)}; got {raw!r}")
            return False
        if opt.check is not None:
            try:
                opt.check(raw)
            except ValueError as exc:
                self.problem(path, str(exc))
                return False
        return True

    def number(self, path: str, raw: Any, opt: Opt) -> Any:
        ok = isinstance(raw, int) if opt.kind == "int" else isinstance(raw, int | float)
        if isinstance(raw, bool) or not ok:
            self.problem(path, f"must be {'an integer' if opt.kind == 'int' else 'a number'}, "
                         f"not {raw!r}")
            return self.placeholder(opt)
        if opt.minimum is not None and raw < opt.minimum:
            self.problem(path, f"must be at least {opt.minimum:g}, not {raw!r}")
        if opt.maximum is not None and raw > opt.maximum:
            self.problem(path, f"must be at most {opt.maximum:g}, not {raw!r}")
        return float(raw) if opt.kind == "float" else raw

    def converted(self, opt: Opt, value: Any) -> Any:
        """A YAML-level default as the settings hold it."""
        if value is None:
            return None
        if opt.kind == "path":
            return self.resolve(value)
        if opt.kind == "list[str]":
            return tuple(value)
        return value

    def placeholder(self, opt: Opt) -> Any:
        """What stands in for a missing or bad value while the walk goes on."""
        if opt.kind == "list[section]":
            return ()
        if opt.kind == "path" and opt.default is None:
            return self.base
        return self.converted(opt, opt.default)

    def resolve(self, raw: str) -> Path:
        p = Path(os.path.expanduser(raw))
        if not p.is_absolute():
            p = self.base / p
        return Path(os.path.abspath(p))


def _section(opt: Opt) -> type[Any]:
    assert opt.section is not None
    return opt.section


def _kind(raw: Any) -> str:
    names: dict[type, str] = {list: "a list", str: "a string"}
    return names.get(type(raw), type(raw).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
