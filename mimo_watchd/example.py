"""Renders ``config.example.yaml`` from the schema, so the example can never drift from it.

``python -m mimo_watchd.example > config.example.yaml`` regenerates it; a test compares.
"""

from __future__ import annotations

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

# Values shown for options that have no default (required ones, and optional examples).
EXAMPLES: dict[str, Any] = {
    "watches.path": "./inbox",
    "watches.processed_dir": "./processed",
    "watches.failed_dir": "./failed",
}
# Optional sections shown filled in, so every option appears once.
EXAMPLE_SECTIONS: dict[str, dict[str, Any]] = {
    "watches.on_success": {"command": ["/usr/local/bin/notify-transcript"],
                           "webhook": None},
    "watches.on_failure": {"command": None, "webhook": "http://127.0.0.1:8080/mimo-failed"},
}


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _describe(opt: Opt) -> str:
    extra = []
    if opt.choices:
        extra.append("one of: " + ", ".join(opt.choices))
    if opt.required:
        extra.append("required")
    return opt.help + (f" ({'; '.join(extra)})" if extra else "")


def _render(schema: Mapping[str, Opt], indent: str, path: str, out: list[str],
            values: Mapping[str, Any] | None = None) -> None:
    for key, opt in schema.items():
        full = f"{path}.{key}" if path else key
        for line in textwrap.wrap(_describe(opt), 96 - len(indent)):
            out.append(f"{indent}# {line}")
        if opt.kind == "section":
            if full in EXAMPLE_SECTIONS:
                # Off by default: shown as a commented-out example to copy.
                out.append(f"{indent}{key}: null")
                block: list[str] = [f"{key}:"]
                _render(opt.children, "  ", full, block, EXAMPLE_SECTIONS[full])
                out.extend(f"{indent}#   {line}".rstrip() for line in block)
            elif opt.nullable:
                out.append(f"{indent}{key}: null")
            else:
                out.append(f"{indent}{key}:")
                _render(opt.children, indent + "  ", full, out)
        elif opt.kind == "list[section]":
            out.append(f"{indent}{key}:")
            out.append(f"{indent}  -")
            _render(opt.children, indent + "    ", full, out)
        else:
            if values is not None and key in values:
                value = values[key]
            else:
                value = EXAMPLES.get(full, opt.default)
            out.append(f"{indent}{key}: {_scalar(value)}")
        if not indent:
            out.append("")


def render() -> str:
    out: list[str] = []
    _render(SCHEMA, "", "", out)
    return HEADER + "\n" + "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
