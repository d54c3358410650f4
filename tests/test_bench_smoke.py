"""The benchmark harness still works: two scenarios at tiny sizes (figures not checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main
from bench.report import Table, write_section


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", ["overhead", "latency", "voicemail"])
def test_scenario_smoke_prints_its_table(scenario: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny run drives the real daemon, naive and floor and prints a table with all three."""
    code = main([scenario, "--smoke", "--no-write", "--scratch", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| daemon" in out and "naive" in out and "floor" in out, out
    assert code == 0, out
    assert not any(tmp_path.iterdir()), "the scenario left scratch data behind"


def test_sections_are_replaced_in_place(tmp_path: Path) -> None:
    """Writing a section twice keeps one copy, and other sections are left alone."""
    doc = tmp_path / "BENCHMARKS.md"
    table = Table(["metric", "daemon"])
    table.add("files/s", 1.5)
    write_section("a", "## A\n\n" + table.markdown(), doc)
    write_section("b", "## B", doc)
    write_section("a", "## A again", doc)
    text = doc.read_text()
    assert text.count("<!-- bench:a -->") == 1 and "## A again" in text and "## B" in text
    assert "| files/s | 1.50 |" not in text
