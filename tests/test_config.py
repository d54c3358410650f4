"""Configuration: every problem reported with its key path; keys never leak."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mimo_watchd.config import (
    Secret,
    effective_base_url,
    load,
    redact,
    resolve_api_key,
)
from mimo_watchd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text, encoding="utf-8")
    return p


MINIMAL = """
watches:
  - path: inbox
    processed_dir: processed
    failed_dir: failed
"""


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    """Relative paths resolve against the config file's folder; defaults fill the rest."""
    s = load(write(tmp_path, MINIMAL))
    assert s.watches[0].path == tmp_path / "inbox"
    assert s.api.auth_header == "api-key"
    assert s.api.model == "mimo-v2.5-asr"
    assert s.api.requests_per_minute == 90
    assert s.state_dir == tmp_path / "state"
    assert "*.wav" in s.watches[0].include and s.watches[0].recursive is True


def test_every_error_is_reported_with_its_path(tmp_path: Path) -> None:
    """Several problems in one file are all reported, each with its key path and the file."""
    cfg = write(tmp_path, """
api:
  auth_header: cookie
  max_concurrency: 0
  colour: blue
bogus: 1
watches:
  - path: inbox
    processed_dir: processed
  - processed_dir: p2
    failed_dir: f2
    recursive: maybe
""")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    problems = info.value.problems
    expected = ["api.auth_header:", "api.max_concurrency:", "api.colour: unknown option",
                "bogus: unknown option", "watches[0].failed_dir: is required",
                "watches[1].path: is required", "watches[1].recursive:"]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert str(cfg) in info.value.render()


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """A YAML syntax error is a ConfigError naming the file and line."""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "watches: [\n  - path: x\n"))
    assert "line" in str(info.value) and "config.yaml" in str(info.value)


def test_output_folder_inside_watch_is_refused_unless_excluded(tmp_path: Path) -> None:
    """processed_dir inside the watched tree is an error unless an exclude glob covers it."""
    text = """
watches:
  - path: inbox
    processed_dir: inbox/done
    failed_dir: failed
"""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert any("processed_dir" in p and "inside" in p for p in info.value.problems)
    ok = load(write(tmp_path, text + "    exclude: ['done/**']\n"))
    assert ok.watches[0].processed_dir == tmp_path / "inbox" / "done"


def test_nested_watches_are_refused(tmp_path: Path) -> None:
    """A watch inside another watch is a configuration error."""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, """
watches:
  - {path: a, processed_dir: p, failed_dir: f}
  - {path: a/b, processed_dir: p2, failed_dir: f2}
"""))
    assert any("a watch may not contain another" in p for p in info.value.problems)


def test_key_from_env_file_and_credential(tmp_path: Path) -> None:
    """The key comes from api_key_file, the environment, or the systemd credential."""
    s = load(write(tmp_path, MINIMAL))
    assert resolve_api_key(s.api, {"MIMO_API_KEY": "sk-env"}).reveal() == "sk-env"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mimo-api-key").write_text("sk-cred\n")
    assert resolve_api_key(s.api, {"CREDENTIALS_DIRECTORY": str(creds)}).reveal() == "sk-cred"
    with pytest.raises(ConfigError) as info:
        resolve_api_key(s.api, {})
    assert "MIMO_API_KEY" in str(info.value)
    keyfile = tmp_path / "key"
    keyfile.write_text("sk-file\n")
    s2 = load(write(tmp_path, MINIMAL + f"api:\n  api_key_file: {keyfile}\n"))
    assert resolve_api_key(s2.api, {}).reveal() == "sk-file"


def test_secret_never_shows_itself() -> None:
    """repr, str, f-strings and pickling of a Secret never reveal the key."""
    s = Secret("sk-very-secret-value")
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"k": s})):
        assert "very-secret" not in shown
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert redact({"a": ["x sk-very-secret-value y"]}) == {"a": ["x *** y"]}


def test_base_url_env_override(tmp_path: Path) -> None:
    """MIMO_BASE_URL overrides api.base_url, trailing slash removed."""
    s = load(write(tmp_path, MINIMAL))
    assert effective_base_url(s.api, {}) == "https://api.xiaomimimo.com/v1"
    assert effective_base_url(s.api, {"MIMO_BASE_URL": "http://127.0.0.1:9/v1/"}) == \
        "http://127.0.0.1:9/v1"


def _option_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, opt in schema.items():
        keys.append(key)
        keys.extend(_option_keys(dict(opt.children)))
    return keys


def test_example_config_is_current_valid_and_complete(tmp_path: Path) -> None:
    """config.example.yaml equals the schema's rendering, validates, and names every option."""
    from mimo_watchd.config import SCHEMA
    from mimo_watchd.example import render

    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    text = example.read_text(encoding="utf-8")
    assert text == render(), "regenerate: python -m mimo_watchd.example > config.example.yaml"
    load(example)
    for key in _option_keys(dict(SCHEMA)):
        assert f"{key}:" in text, key


def test_the_example_leaves_state_dir_to_where_the_daemon_runs(tmp_path: Path) -> None:
    """A copy of config.example.yaml leaves state_dir unset: under systemd (or in the
    container) it is $STATE_DIRECTORY, elsewhere ./state beside the config file."""
    import yaml

    from mimo_watchd.config import parse

    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    raw = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert "state_dir" not in raw
    under_systemd = parse(raw, base=tmp_path, env={"STATE_DIRECTORY": "/var/lib/mimo-watchd"})
    assert under_systemd.state_dir == Path("/var/lib/mimo-watchd")
    assert parse(raw, base=tmp_path, env={}).state_dir == tmp_path / "state"
