"""Configuration: a schema held as data, validated once into frozen settings.

The schema drives validation (every problem reported with its key path, unknown keys are errors)
and documents every option; ``config.example.yaml`` is checked against it by a test.
Relative paths in the file are resolved against the file's own folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mimo_watchd.errors import ConfigError

DEFAULT_BASE_URL = "https://api.xiaomimimo.com/v1"
CREDENTIAL_NAME = "mimo-api-key"
AUDIO_EXTENSIONS = (
    "wav", "mp3", "m4a", "aac", "mp4", "ogg", "oga", "opus", "flac", "amr", "awb", "gsm",
    "webm", "weba", "wma", "aif", "aiff", "aifc", "caf", "3gp", "mka", "wv", "spx",
)  # fmt: skip
DEFAULT_INCLUDE = tuple(f"*.{ext}" for ext in AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class Opt:
    """One option of the schema: its type, default, allowed values and what it does."""

    kind: str  # str | int | float | bool | path | list[str] | section | list[section]
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    nullable: bool = False
    children: Mapping[str, Opt] = field(default_factory=dict)


HOOK = {
    "command": Opt("list[str]", None, "argv of a program to run (never through a shell); "
                   "gets the paths as arguments and MIMO_WATCHD_* environment variables",
                   nullable=True),
    "webhook": Opt("str", None, "URL that receives a POST of the sidecar JSON", nullable=True),
    "timeout_seconds": Opt("float", 30.0, "how long a hook may run before it is abandoned",
                           minimum=0.1),
    "retries": Opt("int", 3, "extra webhook attempts after a failure", minimum=0, maximum=20),
}

WATCH = {
    "path": Opt("path", None, "folder to watch", required=True),
    "recursive": Opt("bool", True, "also watch sub-folders"),
    "include": Opt("list[str]", list(DEFAULT_INCLUDE),
                   "globs of files to take, case-insensitive, read like .gitignore lines: "
                   "without '/' a glob matches a name, with '/' the path relative to the watch "
                   "(default: audio extensions)"),
    "exclude": Opt("list[str]", [], "globs never to take (same rules as include); excluding a "
                   "folder excludes everything below it, e.g. 'processed/**' or 'archive'"),
    "language": Opt("str", None, "language for this watch (auto|zh|en); default: api.language",
                    choices=("auto", "zh", "en"), nullable=True),
    "processed_dir": Opt("path", None, "where transcribed audio is moved", required=True),
    "failed_dir": Opt("path", None, "where audio that failed is moved, with NAME.error.json",
                      required=True),
    "output_dir": Opt("path", None, "put sidecars here instead of beside the processed audio",
                      nullable=True),
    "polling": Opt("bool", False, "poll instead of inotify (NFS/SMB shares give no events)"),
    "poll_interval_seconds": Opt("float", 5.0, "polling interval", minimum=0.1),
    "settle_seconds": Opt("float", 2.0,
                          "size and mtime must stay unchanged this long before a file is taken",
                          minimum=0.0),
    "on_success": Opt("section", None, "hook run after a file is transcribed", nullable=True,
                      children=HOOK),
    "on_failure": Opt("section", None, "hook run after a file is moved to failed_dir",
                      nullable=True, children=HOOK),
}

SCHEMA: dict[str, Opt] = {
    "api": Opt("section", {}, "how to reach the MiMo API", children={
        "base_url": Opt("str", DEFAULT_BASE_URL, "API base URL; env MIMO_BASE_URL overrides"),
        "api_key_env": Opt("str", "MIMO_API_KEY", "environment variable holding the API key"),
        "api_key_file": Opt("path", None, "file holding the API key (instead of the environment); "
                            "$CREDENTIALS_DIRECTORY/mimo-api-key is also tried", nullable=True),
        "auth_header": Opt("str", "api-key", "how the key is sent", choices=("api-key", "bearer")),
        "model": Opt("str", "mimo-v2.5-asr", "model name"),
        "language": Opt("str", "auto", "transcription language", choices=("auto", "zh", "en")),
        "stream": Opt("bool", False, "use server-sent events for responses"),
        "requests_per_minute": Opt("int", 100, "client-side request budget (account limit: "
                                   "100); lower it when other clients share the account",
                                   minimum=1),
        "tokens_per_minute": Opt("int", 10000, "client-side token budget (account limit: "
                                 "10000); lower it when other clients share the account",
                                 minimum=100),
        "tpm_counts": Opt("str", "total",
                          "what the account's tokens-per-minute limit counts: prompt plus "
                          "completion tokens, or prompt tokens only (undocumented by Xiaomi)",
                          choices=("total", "prompt")),
        "max_concurrency": Opt("int", 8, "requests in flight at once, at most (fewer while the "
                               "account refuses more); also files worked on at once",
                               minimum=1, maximum=64),
        "max_retries": Opt("int", 4, "retries of a transient failure within one attempt",
                           minimum=0, maximum=20),
        "backoff_initial_seconds": Opt("float", 1.0, "first retry delay", minimum=0.0),
        "backoff_max_seconds": Opt("float", 60.0, "retry delay cap", minimum=0.0),
        "connect_timeout_seconds": Opt("float", 10.0, "TCP/TLS connect timeout", minimum=0.1),
        "timeout_base_seconds": Opt("float", 30.0, "read/write timeout for a request", minimum=0.1),
        "timeout_per_audio_second": Opt("float", 0.2,
                                        "added to read/write timeouts per second of audio",
                                        minimum=0.0),
        "max_request_b64_chars": Opt("int", 9_500_000,
                                     "largest base64 audio string sent in one request",
                                     minimum=50_000, maximum=10_485_760),
    }),
    "audio": Opt("section", {}, "audio preparation and splitting of long recordings", children={
        "max_chunk_seconds": Opt("float", 300.0, "longest audio sent in one request",
                                 minimum=5.0, maximum=900.0),
        "chunk_format": Opt("str", "mp3", "encoding of transcoded audio and chunks",
                            choices=("mp3", "wav")),
        "silence_threshold_db": Opt("float", -40.0,
                                    "level (dBFS) under which audio counts as silence",
                                    minimum=-120.0, maximum=0.0),
        "silence_search_seconds": Opt("float", 30.0,
                                      "window before a chunk's end searched for silence",
                                      minimum=0.0),
        "overlap_seconds": Opt("float", 2.0,
                               "overlap of chunks cut where no silence exists", minimum=0.0),
    }),
    "state_dir": Opt("path", "./state", "folder for the ledger (SQLite) and runtime files; "
                     "when unset, systemd's $STATE_DIRECTORY if set, else ./state"),
    "on_duplicate": Opt("str", "reuse",
                        "same content seen again: reuse the earlier transcript, transcribe "
                        "again, or skip (move to processed without outputs)",
                        choices=("reuse", "transcribe", "skip")),
    "max_attempts": Opt("int", 5, "attempts of a file with transient failures before it fails",
                        minimum=1, maximum=100),
    "max_interruptions": Opt("int", 3,
                             "times the daemon may die (crash, out-of-memory kill, kill -9) "
                             "while processing one file, with no progress in between, before "
                             "that file goes to failed_dir instead of being tried again",
                             minimum=1, maximum=1000),
    "retry_delay_seconds": Opt("float", 60.0,
                               "first delay before a failed attempt is tried again "
                               "(doubles each attempt)", minimum=0.0),
    "incomplete_timeout_seconds": Opt("float", 600.0,
                                      "how long a file that does not probe as whole audio is "
                                      "re-checked before it fails", minimum=0.0),
    "rescan_interval_seconds": Opt("float", 300.0, "full rescan of every watch", minimum=1.0),
    "pause_probe_seconds": Opt("float", 60.0,
                               "while paused by an operator problem, retry this often",
                               minimum=0.1),
    "shutdown_timeout_seconds": Opt("float", 60.0,
                                    "on SIGTERM, wait this long for in-flight jobs",
                                    minimum=0.0),
    "worker_stall_seconds": Opt("float", 900.0,
                                "a job making no progress this long counts as hung: health "
                                "turns bad and systemd watchdog pings stop", minimum=0.5),
    "log": Opt("section", {}, "logging", children={
        "level": Opt("str", "info", "minimum level",
                     choices=("debug", "info", "warning", "error")),
        "format": Opt("str", "auto", "json lines, console, or auto (json when not a terminal)",
                      choices=("auto", "json", "console")),
    }),
    "metrics": Opt("section", {}, "Prometheus metrics and health endpoint", children={
        "listen": Opt("str", None, "host:port to serve /metrics and /healthz; off when empty",
                      nullable=True),
    }),
    "watches": Opt("list[section]", None, "folders to watch", required=True, children=WATCH),
}


@dataclass(frozen=True)
class HookSettings:
    command: tuple[str, ...] | None
    webhook: str | None
    timeout_seconds: float
    retries: int


@dataclass(frozen=True)
class WatchSettings:
    path: Path
    recursive: bool
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    language: str | None
    processed_dir: Path
    failed_dir: Path
    output_dir: Path | None
    polling: bool
    poll_interval_seconds: float
    settle_seconds: float
    on_success: HookSettings | None
    on_failure: HookSettings | None


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    api_key_env: str
    api_key_file: Path | None
    auth_header: str
    model: str
    language: str
    stream: bool
    requests_per_minute: int
    tokens_per_minute: int
    tpm_counts: str
    max_concurrency: int
    max_retries: int
    backoff_initial_seconds: float
    backoff_max_seconds: float
    connect_timeout_seconds: float
    timeout_base_seconds: float
    timeout_per_audio_second: float
    max_request_b64_chars: int


@dataclass(frozen=True)
class AudioSettings:
    max_chunk_seconds: float
    chunk_format: str
    silence_threshold_db: float
    silence_search_seconds: float
    overlap_seconds: float


@dataclass(frozen=True)
class LogSettings:
    level: str
    format: str


@dataclass(frozen=True)
class MetricsSettings:
    listen: str | None


@dataclass(frozen=True)
class Settings:
    api: ApiSettings
    audio: AudioSettings
    state_dir: Path
    on_duplicate: str
    max_attempts: int
    max_interruptions: int
    retry_delay_seconds: float
    incomplete_timeout_seconds: float
    rescan_interval_seconds: float
    pause_probe_seconds: float
    shutdown_timeout_seconds: float
    worker_stall_seconds: float
    log: LogSettings
    metrics: MetricsSettings
    watches: tuple[WatchSettings, ...]
    source: Path | None = None


class _Validator:
    """Walks a parsed YAML document against the schema, collecting every problem."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

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
            if key not in raw:
                if opt.required:
                    self.problem(sub, "is required")
                    out[key] = None
                elif opt.kind == "section" and not opt.nullable:
                    out[key] = self.section(sub, {}, opt.children)
                elif opt.kind == "path" and opt.default is not None:
                    out[key] = _resolve(self.base, opt.default)
                else:
                    out[key] = _copy(opt.default)
                continue
            out[key] = self.value(sub, raw[key], opt)
        return out

    def value(self, path: str, raw: Any, opt: Opt) -> Any:
        if raw is None:
            if opt.nullable:
                return None
            self.problem(path, "must not be empty")
            return _copy(opt.default)
        kind = opt.kind
        if kind == "section":
            return self.section(path, raw, opt.children)
        if kind == "list[section]":
            if not isinstance(raw, list) or not raw:
                self.problem(path, "must be a non-empty list")
                return []
            return [self.section(f"{path}[{i}]", item, opt.children) for i, item in enumerate(raw)]
        if kind == "list[str]":
            if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
                self.problem(path, "must be a list of non-empty strings")
                return _copy(opt.default)
            return list(raw)
        if kind == "bool":
            if not isinstance(raw, bool):
                self.problem(path, f"must be true or false, not {raw!r}")
                return opt.default
            return raw
        if kind in ("int", "float"):
            ok = isinstance(raw, int) if kind == "int" else isinstance(raw, int | float)
            if isinstance(raw, bool) or not ok:
                self.problem(path, f"must be {'an integer' if kind == 'int' else 'a number'}, "
                             f"not {raw!r}")
                return opt.default
            if opt.minimum is not None and raw < opt.minimum:
                self.problem(path, f"must be at least {opt.minimum:g}, not {raw!r}")
            if opt.maximum is not None and raw > opt.maximum:
                self.problem(path, f"must be at most {opt.maximum:g}, not {raw!r}")
            return float(raw) if kind == "float" else raw
        if not isinstance(raw, str) or not raw.strip():
            self.problem(path, f"must be a non-empty string, not {raw!r}")
            return opt.default
        if opt.choices and raw not in opt.choices:
            self.problem(path, f"must be one of {', '.join(opt.choices)}; got {raw!r}")
            return opt.default
        if kind == "path":
            return _resolve(self.base, raw)
        return raw


def _kind(raw: Any) -> str:
    names: dict[type, str] = {list: "a list", str: "a string"}
    return names.get(type(raw), type(raw).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _copy(value: Any) -> Any:
    if isinstance(value, list | dict):
        return type(value)(value)
    return value


def _resolve(base: Path, raw: str) -> Path:
    p = Path(os.path.expanduser(raw))
    if not p.is_absolute():
        p = base / p
    return Path(os.path.abspath(p))


def _hook(raw: dict[str, Any] | None) -> HookSettings | None:
    if raw is None:
        return None
    cmd = raw["command"]
    return HookSettings(
        command=tuple(cmd) if cmd else None,
        webhook=raw["webhook"],
        timeout_seconds=raw["timeout_seconds"],
        retries=raw["retries"],
    )


def _watch(raw: dict[str, Any]) -> WatchSettings:
    return WatchSettings(
        path=raw["path"],
        recursive=raw["recursive"],
        include=tuple(raw["include"]),
        exclude=tuple(raw["exclude"]),
        language=raw["language"],
        processed_dir=raw["processed_dir"],
        failed_dir=raw["failed_dir"],
        output_dir=raw["output_dir"],
        polling=raw["polling"],
        poll_interval_seconds=raw["poll_interval_seconds"],
        settle_seconds=raw["settle_seconds"],
        on_success=_hook(raw["on_success"]),
        on_failure=_hook(raw["on_failure"]),
    )


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _cross_check(s: dict[str, Any], problems: list[str]) -> None:
    """Checks that need several options at once: folders inside watches, nested watches."""
    watches = s["watches"] or []
    for i, w in enumerate(watches):
        if w["path"] is None:
            continue
        for hook in ("on_success", "on_failure"):
            h = w[hook]
            if h is not None and not h["command"] and not h["webhook"]:
                problems.append(f"watches[{i}].{hook}: needs a command or a webhook")
        for j, other in enumerate(watches):
            if i != j and other["path"] is not None and _is_within(other["path"], w["path"]):
                if other["path"] == w["path"]:
                    if i < j:
                        problems.append(f"watches[{j}].path: same folder as watches[{i}].path")
                else:
                    problems.append(f"watches[{j}].path: lies inside watches[{i}].path "
                                    f"({w['path']}); a watch may not contain another")
        for key in ("processed_dir", "failed_dir", "output_dir"):
            for j, other in enumerate(watches):
                target = other[key]
                if target is None or other["path"] is None:
                    continue
                if not _is_within(target, w["path"]):
                    continue
                if target == w["path"] or not _excluded(target, w):
                    problems.append(
                        f"watches[{j}].{key}: {target} lies inside the watched folder "
                        f"watches[{i}].path ({w['path']}); move it out or exclude it "
                        f"(e.g. exclude: ['{target.relative_to(w['path']).as_posix()}/**'])"
                        if target != w["path"] else
                        f"watches[{j}].{key}: must not be the watched folder itself")
    state = s["state_dir"]
    for i, w in enumerate(watches):
        if state is not None and w["path"] is not None and _is_within(state, w["path"]):
            problems.append(f"state_dir: {state} lies inside watches[{i}].path")


def _excluded(target: Path, w: dict[str, Any]) -> bool:
    """True when the watch never looks into the folder ``target`` inside it.

    Uses the watcher's own name rules (case-insensitive, .gitignore-like globs, hidden folders
    never walked), so the check agrees exactly with what would be watched.
    """
    from mimo_watchd.names import Globs, NameFilter

    rules = NameFilter(w["recursive"], Globs.compile(tuple(w["include"])),
                       Globs.compile(tuple(w["exclude"])))
    parts = target.relative_to(w["path"]).parts
    return any(not rules.takes_dir("/".join(parts[: i + 1])) for i in range(len(parts)))


def parse(raw: Any, *, base: Path, source: str | None = None,
          env: Mapping[str, str] | None = None) -> Settings:
    """Validates a parsed document; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    v = _Validator(base)
    s = v.section("", raw, SCHEMA)
    if isinstance(raw, dict) and "state_dir" not in raw and env.get("STATE_DIRECTORY"):
        # Under systemd, StateDirectory= is the writable place (the config's folder is not).
        s["state_dir"] = Path(env["STATE_DIRECTORY"].split(":")[0])
    listen = s["metrics"]["listen"]
    if listen:
        from mimo_watchd.metrics import parse_listen

        try:
            parse_listen(listen)
        except ConfigError as exc:
            v.problems.extend(exc.problems)
    if not v.problems:
        _cross_check(s, v.problems)
    if v.problems:
        raise ConfigError(v.problems, source)
    api, audio = s["api"], s["audio"]
    return Settings(
        api=ApiSettings(**api),
        audio=AudioSettings(**audio),
        state_dir=s["state_dir"],
        on_duplicate=s["on_duplicate"],
        max_attempts=s["max_attempts"],
        max_interruptions=s["max_interruptions"],
        retry_delay_seconds=s["retry_delay_seconds"],
        incomplete_timeout_seconds=s["incomplete_timeout_seconds"],
        rescan_interval_seconds=s["rescan_interval_seconds"],
        pause_probe_seconds=s["pause_probe_seconds"],
        shutdown_timeout_seconds=s["shutdown_timeout_seconds"],
        worker_stall_seconds=s["worker_stall_seconds"],
        log=LogSettings(**s["log"]),
        metrics=MetricsSettings(**s["metrics"]),
        watches=tuple(_watch(w) for w in s["watches"]),
        source=Path(source) if source else None,
    )


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


def _defaults(section: str, overrides: dict[str, Any]) -> dict[str, Any]:
    v = _Validator(Path.cwd())
    data = v.section(section, overrides, SCHEMA[section].children)
    if v.problems:
        raise ConfigError(v.problems)
    return data


def default_api_settings(**overrides: Any) -> ApiSettings:
    """API settings with every default, for the ``transcribe`` command that needs no file."""
    return ApiSettings(**_defaults("api", overrides))


def default_audio_settings(**overrides: Any) -> AudioSettings:
    """Audio settings with every default (plus overrides)."""
    return AudioSettings(**_defaults("audio", overrides))


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
    """An API key that never shows itself in ``repr``, ``str`` or f-strings.

    Every key is also remembered so that ``redact`` can scrub it from anything written out
    (log lines, error files), in case an error message or a body ever echoes it.
    """

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
