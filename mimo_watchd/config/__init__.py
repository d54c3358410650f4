"""Configuration: the settings classes are the schema; a file is validated once into them.

- ``schema``: how a dataclass field declares an option (help, example, bounds, choices).
- ``settings``: the frozen settings classes, field by field the options (``SCHEMA`` views them).
- ``validate``: walks a YAML document against them, every problem with its key path.
- ``checks``: the logical checks across options (one function: load and start call it).
- ``loader``: ``load`` (file -> Settings) and the defaults commands use without a file.
- ``secrets``: ``Secret``, ``redact``, finding the API key, the base URL override.

``config.example.yaml`` is rendered from the schema by ``mimo_watchd.example``; a test compares.
"""

from mimo_watchd.config.checks import problems, require_consistent
from mimo_watchd.config.loader import (
    default_api_settings,
    default_audio_settings,
    load,
    parse,
)
from mimo_watchd.config.schema import Opt, option, section
from mimo_watchd.config.secrets import (
    CREDENTIAL_NAME,
    DSN_CREDENTIAL_NAME,
    Secret,
    effective_base_url,
    redact,
    resolve_api_key,
    resolve_dsn,
)
from mimo_watchd.config.settings import (
    AUDIO_EXTENSIONS,
    DEFAULT_BASE_URL,
    DEFAULT_INCLUDE,
    SCHEMA,
    ApiSettings,
    AudioSettings,
    HookSettings,
    LedgerSettings,
    LogSettings,
    MetricsSettings,
    NotifySettings,
    RetentionSettings,
    Settings,
    WatchSettings,
    listen_address,
    parse_listen,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "CREDENTIAL_NAME",
    "DEFAULT_BASE_URL",
    "DEFAULT_INCLUDE",
    "DSN_CREDENTIAL_NAME",
    "SCHEMA",
    "ApiSettings",
    "AudioSettings",
    "HookSettings",
    "LedgerSettings",
    "LogSettings",
    "MetricsSettings",
    "NotifySettings",
    "Opt",
    "RetentionSettings",
    "Secret",
    "Settings",
    "WatchSettings",
    "default_api_settings",
    "default_audio_settings",
    "effective_base_url",
    "listen_address",
    "load",
    "option",
    "parse",
    "parse_listen",
    "problems",
    "redact",
    "require_consistent",
    "resolve_api_key",
    "resolve_dsn",
    "section",
]
