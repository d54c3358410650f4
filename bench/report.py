"""Tables of figures, the machine they were measured on, and BENCHMARKS.md sections.

Each scenario returns a ``Section``; ``write_section`` replaces that scenario's part of
BENCHMARKS.md (between ``<!-- bench:NAME -->`` markers) and leaves every other part alone, so
scenarios can be re-run one at a time.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every figure here was measured by `python -m bench SCENARIO` (see `bench/__main__.py`): the real
daemon process (`python -m mimo_watchd run`) against the real emulator (its own process, on
127.0.0.1), next to two baselines measured in the same run:

- **naive**: `bench/naive.py`, the script an operator writes in an afternoon (a polling loop,
  sequential httpx requests, no rate limiting, no journal);
- **floor**: `bench/floor.py`, a client that only POSTs pre-encoded request bodies as fast as it
  can with the daemon's concurrency: the cost no daemon can beat.

Each section is rewritten by its scenario and says how it was run, when, and on what machine.
"""


def machine() -> str:
    """Cores, CPU model, memory, Python and kernel of this machine, on one line."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 ** 2:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{os.cpu_count()} cores ({model or platform.machine()}){mem}, "
            f"Python {platform.python_version()}, Linux {platform.release()}")


def fmt(value: float | int | str | None, digits: int = 2) -> str:
    """A figure for a table cell ("-" when missing)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.{digits}f}"


@dataclass
class Table:
    """A Markdown table: a header row and rows of cells."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: float | int | str | None) -> None:
        self.rows.append([fmt(c) for c in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """One scenario's part of BENCHMARKS.md."""

    name: str
    title: str
    setup: str
    tables: list[Table]
    verdicts: list[str] = field(default_factory=list)
    notes: str = ""
    ok: bool = True

    def markdown(self, command: str) -> str:
        parts = [f"## {self.title}", "",
                 f"`{command}` - {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} - "
                 f"{machine()}", "", self.setup.strip(), ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        if self.verdicts:
            parts += [f"- {v}" for v in self.verdicts] + [""]
        if self.notes.strip():
            parts += [self.notes.strip(), ""]
        return "\n".join(parts)


def command_line(argv: list[str]) -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in argv)


def write_section(name: str, text: str, path: Path = BENCHMARKS) -> None:
    """Puts ``text`` between this section's markers, replacing what was there."""
    doc = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"<!-- bench:{name} -->\n{text.rstrip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->",
                         re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _m: block, doc)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def emit(section: Section, argv: list[str], *, write: bool) -> None:
    """Prints the section; writes it to BENCHMARKS.md when asked."""
    text = section.markdown(command_line(argv))
    print(text, flush=True)
    if write:
        write_section(section.name, text)
        print(f"(written to {BENCHMARKS})", file=sys.stderr)
