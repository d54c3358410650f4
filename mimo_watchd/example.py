"""Renders ``config.example.yaml`` from the schema, so the example can never drift from it.

``python -m mimo_watchd.example > config.example.yaml`` regenerates it; a test compares.
Options show their default; required ones show their example; an option off by default
(``null``) names its example in its comment, and an optional section is shown filled in with
its example, commented out, ready to copy. An option whose default depends on where the daemon
runs (``state_dir``) is shown commented out, so that a copy leaves it unset.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml

from mimo_watchd.config import SCHEMA, Opt

HEADER = """\
# mimo-watchd configuration: every option, with its default and what it does.
# Validate with: mimo-watchd check -c config.yaml   (reload a running daemon with SIGHUP)
# Relative paths are relative to this file's folder.
"""


def _scalar(value: Any) -> str:
    if isinstance(value, str) and "\n" in value:
        return json.dumps(value, ensure_ascii=False)  # one line: a YAML double-quoted scalar
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _describe(opt: Opt, shown: Any) -> str:
    extra = []
    if opt.choices:
        extra.append("one of: " + ", ".join(opt.choices))
    if opt.required:
        extra.append("required")
    if shown is None and opt.example is not None:
        extra.append(f"e.g. {_scalar(opt.example)}")
    return opt.help + (f" ({'; '.join(extra)})" if extra else "")


def _shown(opt: Opt, key: str, values: Mapping[str, Any] | None) -> Any:
    if opt.kind in ("section", "list[section]"):
        return {}
    if values is not None and key in values:
        return values[key]
    return opt.example if opt.required else opt.default


def _render(schema: Mapping[str, Opt], indent: str, out: list[str],
            values: Mapping[str, Any] | None = None) -> None:
    for key, opt in schema.items():
        shown = _shown(opt, key, values)
        for line in textwrap.wrap(_describe(opt, shown), 96 - len(indent)):
            out.append(f"{indent}# {line}")
        if opt.kind == "section":
            if opt.nullable and isinstance(opt.example, Mapping):
                # Off by default: shown as a commented-out example to copy.
                out.append(f"{indent}{key}: null")
                block: list[str] = [f"{key}:"]
                _render(opt.children, "  ", block, opt.example)
                out.extend(f"{indent}#   {line}".rstrip() for line in block)
            elif opt.nullable:
                out.append(f"{indent}{key}: null")
            else:
                out.append(f"{indent}{key}:")
                _render(opt.children, indent + "  ", out)
        elif opt.kind == "list[section]":
            out.append(f"{indent}{key}:")
            out.append(f"{indent}  -")
            _render(opt.children, indent + "    ", out)
        elif opt.unset_in_example:
            out.append(f"{indent}# {key}: {_scalar(shown)}")
        else:
            out.append(f"{indent}{key}: {_scalar(shown)}")
        if not indent:
            out.append("")


def render() -> str:
    """The text of ``config.example.yaml``."""
    out: list[str] = []
    _render(SCHEMA, "", out)
    return HEADER + "\n" + "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
