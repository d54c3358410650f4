"""The settings classes are the schema: options, examples, the validator and the logical checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd.config import (
    SCHEMA,
    Opt,
    Settings,
    WatchSettings,
    load,
    option,
    parse,
    problems,
)
from mimo_watchd.config.schema import options, settings_class
from mimo_watchd.config.validate import Validator
from mimo_watchd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _examples(schema: Any) -> dict[str, Any]:
    """A document holding every option's example (sections filled in, one watch)."""
    doc: dict[str, Any] = {}
    for key, opt in schema.items():
        if opt.kind == "section":
            example = opt.example if opt.nullable else None
            doc[key] = dict(example) if example else _examples(opt.children)
        elif opt.kind == "list[section]":
            doc[key] = [_examples(opt.children)]
        else:
            doc[key] = opt.example
    return doc


def _walk(schema: Any, prefix: str = "") -> list[tuple[str, Opt]]:
    out = []
    for key, opt in schema.items():
        out.append((prefix + key, opt))
        out.extend(_walk(opt.children, f"{prefix}{key}."))
    return out


def test_every_option_has_an_example_that_validates(tmp_path: Path) -> None:
    """Each scalar option has an example, and a config made of all the examples is valid."""
    scalars = [(k, o) for k, o in _walk(SCHEMA) if o.kind not in ("section", "list[section]")]
    assert len(scalars) > 40
    assert [k for k, o in scalars if o.example is None] == []
    doc = _examples(SCHEMA)
    assert doc["metrics"]["listen"] == "127.0.0.1:9464"
    settings = parse(doc, base=tmp_path, env={})
    assert settings.watches[0].output_dir == tmp_path / "transcripts"
    assert settings.watches[0].on_failure is not None


def test_a_new_option_is_one_field() -> None:
    """A field declared with ``option`` is validated (type, bounds, unknown keys) and defaulted
    with no other edit."""

    @settings_class
    class Demo:
        retries: int = option(default=2, minimum=1, help="how often")
        folder: Path = option(example="./x", help="where")

    v = Validator(Path("/base"))
    demo = v.build("demo", {"folder": "in"}, Demo)
    assert v.problems == [] and demo.retries == 2 and demo.folder == Path("/base/in")
    v = Validator(Path("/base"))
    v.build("demo", {"retries": 0, "colour": "red"}, Demo)
    assert sorted(v.problems) == ["demo.colour: unknown option",
                                  "demo.folder: is required",
                                  "demo.retries: must be at least 1, not 0"]


def test_an_option_needs_an_example_when_it_has_no_default() -> None:
    """A required or null-by-default option without an example is refused when declared."""

    @settings_class
    class Broken:
        where: Path = option(help="no example")

    with pytest.raises(TypeError, match="where"):
        options(Broken)


def test_logical_checks_run_on_settings_built_in_code(tmp_path: Path) -> None:
    """``problems`` judges typed settings however they were made: a state folder inside a
    watch and an output folder inside another watch are both reported with their paths."""
    inbox = tmp_path / "inbox"
    watch = WatchSettings(path=inbox, processed_dir=inbox / "done", failed_dir=tmp_path / "f")
    settings = Settings(watches=(watch,), state_dir=inbox / "state")
    found = problems(settings)
    assert any(p.startswith("watches[0].processed_dir:") and "inside" in p for p in found)
    assert any(p.startswith("state_dir:") for p in found)
    assert problems(Settings(watches=(WatchSettings(
        path=inbox, processed_dir=tmp_path / "p", failed_dir=tmp_path / "f"),),
        state_dir=tmp_path / "state")) == []


def test_a_bad_listen_address_is_reported_with_its_path(tmp_path: Path) -> None:
    """metrics.listen is checked by the validator, with the other problems of the file."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("metrics: {listen: 'host:http'}\nwatches: [{path: i, processed_dir: p}]\n")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert "watches[0].failed_dir: is required" in info.value.problems
    assert any(p.startswith("metrics.listen: expected host:port") for p in info.value.problems)


def test_validating_a_config_imports_no_metrics_library(tmp_path: Path) -> None:
    """Loading a config that sets metrics.listen does not import prometheus_client."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("metrics: {listen: '127.0.0.1:0'}\n"
                   "watches: [{path: i, processed_dir: p, failed_dir: f}]\n")
    code = ("import sys; from mimo_watchd.config import load; "
            f"load({str(cfg)!r}); print(sorted(m for m in sys.modules if 'prometheus' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
