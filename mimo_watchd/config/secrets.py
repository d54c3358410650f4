"""The secrets and what the environment overrides: ``Secret``, ``redact``, finding the API key
and the PostgreSQL connection string.

Every secret ever wrapped in a ``Secret`` is remembered so that ``redact`` can scrub it from
anything written out (log lines, error files), in case an error message or a body echoes it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimo_watchd.config.settings import ApiSettings, LedgerSettings
from mimo_watchd.errors import ConfigError

CREDENTIAL_NAME = "mimo-api-key"
DSN_CREDENTIAL_NAME = "mimo-watchd-dsn"

_KNOWN_SECRETS: set[str] = set()


def redact(value: Any) -> Any:
    """``value`` (a string, or lists/dicts of them) with every known key replaced by ``***``."""
    if isinstance(value, str):
        for s in _KNOWN_SECRETS:
            if s in value:
                value = value.replace(s, "***")
        return value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


class Secret:
    """An API key that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= 4:
            _KNOWN_SECRETS.add(value)

    def reveal(self) -> str:
        """The key itself, for the one place that needs it: the request header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def resolve_api_key(api: ApiSettings, env: Mapping[str, str] | None = None) -> Secret:
    """Finds the key: api_key_file, then the environment variable, then the systemd credential."""
    env = os.environ if env is None else env
    tried: list[str] = []
    if api.api_key_file is not None:
        return Secret(_read_key(api.api_key_file, "api.api_key_file"))
    value = env.get(api.api_key_env, "").strip()
    if value:
        return Secret(value)
    tried.append(f"${api.api_key_env} is not set")
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if cred.exists():
            return Secret(_read_key(cred, "systemd credential"))
        tried.append(f"no {CREDENTIAL_NAME} in $CREDENTIALS_DIRECTORY")
    raise ConfigError([f"api: no API key ({'; '.join(tried)})"])


def resolve_dsn(ledger: LedgerSettings, env: Mapping[str, str] | None = None) -> Secret:
    """Finds the PostgreSQL connection string: ledger.dsn_file, then the environment variable,
    then the systemd credential (as the API key is found)."""
    env = os.environ if env is None else env
    if ledger.dsn_file is not None:
        return Secret(_read_key(ledger.dsn_file, "ledger.dsn_file"))
    value = env.get(ledger.dsn_env, "").strip()
    if value:
        return Secret(value)
    tried = [f"${ledger.dsn_env} is not set"]
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / DSN_CREDENTIAL_NAME
        if cred.exists():
            return Secret(_read_key(cred, "systemd credential"))
        tried.append(f"no {DSN_CREDENTIAL_NAME} in $CREDENTIALS_DIRECTORY")
    raise ConfigError([f"ledger: backend postgres needs a connection string ({'; '.join(tried)})"])


def _read_key(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"{what}: cannot read {path}: {exc.strerror or exc}"]) from exc
    if not value:
        raise ConfigError([f"{what}: {path} is empty"])
    return value


def effective_base_url(api: ApiSettings, env: Mapping[str, str] | None = None) -> str:
    """The base URL after the MIMO_BASE_URL override, without a trailing slash."""
    env = os.environ if env is None else env
    return (env.get("MIMO_BASE_URL") or api.base_url).rstrip("/")
