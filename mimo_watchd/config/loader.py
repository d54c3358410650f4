"""Reading a config file into settings: YAML, the validator, the logical checks.

Also the settings with every default that commands without a config file use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mimo_watchd import notifyurls
from mimo_watchd.config.checks import require_consistent
from mimo_watchd.config.secrets import Secret
from mimo_watchd.config.settings import ApiSettings, AudioSettings, Settings
from mimo_watchd.config.validate import Validator
from mimo_watchd.errors import ConfigError

T = TypeVar("T")


def parse(raw: Any, *, base: Path, source: str | None = None,
          env: Mapping[str, str] | None = None) -> Settings:
    """Validates a parsed document; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    v = Validator(base)
    settings = v.build("", raw, Settings)
    if v.problems:
        raise ConfigError(v.problems, source)
    if isinstance(raw, dict) and "state_dir" not in raw and env.get("STATE_DIRECTORY"):
        # Under systemd, StateDirectory= is the writable place (the config's folder is not).
        settings = replace(settings, state_dir=Path(env["STATE_DIRECTORY"].split(":")[0]))
    settings = replace(settings, source=Path(source) if source else None)
    _register_secrets(settings)
    require_consistent(settings, source)
    return settings


def _register_secrets(settings: Settings) -> None:
    """Makes ``redact`` (so every log line) scrub each part of the notification URLs that
    could be a token or a password, before anything can name them."""
    for w in settings.watches:
        for url in w.notify.urls if w.notify is not None else ():
            for secret in notifyurls.secrets_of(url):
                Secret(secret)


def load(path: str | os.PathLike[str]) -> Settings:
    """Reads and validates a YAML config file; relative paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], str(p)) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError([f"{where}: {getattr(exc, 'problem', None) or exc}"], str(p)) from exc
    return parse(raw, base=p.resolve().parent, source=str(p))


def _defaults(section: str, cls: type[T], overrides: dict[str, Any]) -> T:
    v = Validator(Path.cwd())
    settings = v.build(section, overrides, cls)
    if v.problems:
        raise ConfigError(v.problems)
    return settings


def default_api_settings(**overrides: Any) -> ApiSettings:
    """API settings with every default, for the ``transcribe`` command that needs no file."""
    return _defaults("api", ApiSettings, overrides)


def default_audio_settings(**overrides: Any) -> AudioSettings:
    """Audio settings with every default (plus overrides)."""
    return _defaults("audio", AudioSettings, overrides)
