"""The settings: frozen dataclasses whose fields are the options (see ``schema``).

Field order is the order of ``config.example.yaml``. Every class has a default for every
option that is not required, so code and tests can build settings with keywords alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from mimo_watchd import templates
from mimo_watchd.config.schema import Retired, option, options, section, settings_class
from mimo_watchd.days import check_zone
from mimo_watchd.errors import ConfigError

DEFAULT_BASE_URL = "https://api.xiaomimimo.com/v1"
AUDIO_EXTENSIONS = (
    "wav", "mp3", "m4a", "aac", "mp4", "ogg", "oga", "opus", "flac", "amr", "awb", "gsm",
    "webm", "weba", "wma", "aif", "aiff", "aifc", "caf", "3gp", "mka", "wv", "spx",
)  # fmt: skip
DEFAULT_INCLUDE = tuple(f"*.{ext}" for ext in AUDIO_EXTENSIONS)
LANGUAGES = ("auto", "zh", "en")
FORMATS = ("txt", "json", "srt", "vtt")  # the files a transcript can be written as
SUBTITLE_FORMATS = ("srt", "vtt")
NOTIFY_ON = ("success", "failure")


def listen_address(listen: str) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``":port"`` or ``"port"`` -> (host, port).

    The host defaults to 127.0.0.1 (metrics are not for the world unless asked); port 0 picks
    a free one. Raises ValueError for anything else.
    """
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535 or (":" in host and not text.startswith("[")):
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9464), got {listen!r}")
    return host or "127.0.0.1", port


def parse_listen(listen: str) -> tuple[str, int]:
    """:func:`listen_address`, raising ConfigError naming ``metrics.listen``."""
    try:
        return listen_address(listen)
    except ValueError as exc:
        raise ConfigError([f"metrics.listen: {exc}"]) from exc


def check_formats(formats: tuple[str, ...]) -> None:
    """A watch's ``formats``: at least one, none twice."""
    if not formats:
        raise ValueError(f"name at least one of {', '.join(FORMATS)}")
    twice = sorted({f for f in formats if formats.count(f) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} named more than once")


@settings_class
class HookSettings:
    command: tuple[str, ...] | None = option(
        default=None, example=("/usr/local/bin/notify-transcript",),
        help="argv of a program to run (never through a shell); gets the paths as arguments "
        "and MIMO_WATCHD_* environment variables")
    webhook: str | None = option(
        default=None, example="http://127.0.0.1:8080/mimo-done",
        help="URL that receives a POST of the sidecar JSON")
    timeout_seconds: float = option(
        default=30.0, minimum=0.1, help="how long a hook may run before it is abandoned")
    retries: int = option(
        default=3, minimum=0, maximum=20, help="extra webhook attempts after a failure")


@settings_class
class NotifySettings:
    urls: tuple[str, ...] = option(
        example=("json://127.0.0.1:8080/transcripts",
                 "mailto://user:password@mail.example.com?to=me@example.com"),
        help="Apprise URLs to send the message to (mail, ntfy, Matrix, Telegram, Slack, "
        "Gotify, ...: see Apprise's list); they hold tokens and passwords, so they are never "
        "logged: log lines name a URL by its place in this list and its scheme")
    on: tuple[str, ...] = option(
        default=NOTIFY_ON, choices=NOTIFY_ON,
        help="when to send: success (a transcript, also one reused for a duplicate), failure "
        "(moved to failed_dir)")
    title: str = option(
        default="{name}: {outcome}", check=templates.check_message,
        help="the message's title, a template with the fields of body")
    body: str = option(
        default="{summary}\n\n{transcript}{reason}", check=templates.check_message,
        help="the message, a template: {transcript} (cut to max_chars), {name}, {path} (where "
        "the audio is now), {original_path}, {watch}, {outcome} (done, duplicate, failed), "
        "{reason} (why it failed), {duration} (m:ss), {cost}, {language}, {summary} (duration "
        "and cost, or the attempts of a failure); fields that do not apply are empty")
    max_chars: int = option(
        default=2000, minimum=0,
        help="the transcript in the message is cut to this many characters (marked with "
        "'...'); the sidecar keeps it whole")
    retries: int = option(
        default=3, minimum=0, maximum=20,
        help="extra attempts per URL after a failed delivery, with backoff")


@settings_class
class RetentionSettings:
    processed_days: float | None = option(
        default=None, minimum=0.0, example=90,
        help="delete audio in processed_dir this many days after it was processed (its "
        "newest file was written); never when empty")
    failed_days: float | None = option(
        default=None, minimum=0.0, example=30,
        help="the same for failed_dir; never when empty")
    keep: tuple[str, ...] = option(
        default=("sidecars",), choices=("sidecars",),
        help="what retention leaves in place: sidecars (transcripts and error files stay, "
        "only audio goes); [] deletes the sidecars with their audio")


@settings_class
class WatchSettings:
    path: Path = option(example="./inbox", help="folder to watch")
    recursive: bool = option(default=True, help="also watch sub-folders")
    include: tuple[str, ...] = option(
        default=DEFAULT_INCLUDE,
        help="globs of files to take, case-insensitive, read like .gitignore lines: without "
        "'/' a glob matches a name, with '/' the path relative to the watch (default: audio "
        "extensions)")
    exclude: tuple[str, ...] = option(
        default=(),
        help="globs never to take (same rules as include); excluding a folder excludes "
        "everything below it, e.g. 'processed/**' or 'archive'")
    language: str | None = option(
        default=None, choices=LANGUAGES, example="zh",
        help="language for this watch (auto|zh|en); default: api.language")
    processed_dir: Path = option(example="./processed", help="where transcribed audio is moved")
    failed_dir: Path = option(
        example="./failed", help="where audio that failed is moved, with NAME.error.json")
    output_dir: Path | None = option(
        default=None, example="./transcripts",
        help="put sidecars here instead of beside the processed audio")
    formats: tuple[str, ...] = option(
        default=("txt", "json"), choices=FORMATS,
        help="the sidecars written for each transcript: txt (the text), json (everything about "
        "it: segments with times, usage, levels), srt and vtt (subtitles; clips are then cut at "
        "most audio.subtitle_clip_seconds long, so each cue starts and ends at a real pause)")
    processed_path: str | None = option(
        default=None, example="{arrived:%Y/%m}/{relpath}/{stem}{ext}", check=templates.check_path,
        help="where in processed_dir transcribed audio goes, a template with {stem}, {ext}, "
        "{name} (stem and ext), {relpath} (its sub-folder below the watch), {watch} (the "
        "watch folder's name), {language}, {arrived:FORMAT} (arrival time, strftime, in "
        "`timezone`); default: {relpath}/{name}, the folders it arrived in")
    output_path: str | None = option(
        default=None, example="{arrived:%Y-%m-%d}/{stem}", check=templates.check_path,
        help="where in output_dir (else processed_dir) the sidecars go, without their suffix "
        "(.txt, .json), a template with the fields of processed_path; default: the audio's "
        "folder and stem as processed_path gives them")
    polling: bool = option(
        default=False, help="poll instead of inotify (NFS/SMB shares give no events)")
    poll_interval_seconds: float = option(default=5.0, minimum=0.1, help="polling interval")
    settle_seconds: float = option(
        default=2.0, minimum=0.0,
        help="size and mtime must stay unchanged this long before a file is taken")
    on_success: HookSettings | None = option(
        default=None, example={"command": ["/usr/local/bin/notify-transcript"], "webhook": None},
        help="hook run after a file is transcribed")
    on_failure: HookSettings | None = option(
        default=None, example={"command": None, "webhook": "http://127.0.0.1:8080/mimo-failed"},
        help="hook run after a file is moved to failed_dir")
    notify: NotifySettings | None = option(
        default=None,
        example={"urls": ["json://127.0.0.1:8080/transcripts"], "on": ["success", "failure"]},
        help="send a message with the transcript through Apprise (pip install "
        "'mimo-watchd[notify]')")
    retention: RetentionSettings | None = option(
        default=None, example={"processed_days": 90, "failed_days": 30, "keep": ["sidecars"]},
        help="delete old files from processed_dir and failed_dir (checked at start, every hour "
        "and at reload; `mimo-watchd prune --dry-run` shows what would go)")

    @property
    def subtitles(self) -> bool:
        """Whether this watch writes subtitles (its clips are then cut for cues)."""
        return any(f in SUBTITLE_FORMATS for f in self.formats)


@settings_class
class ApiSettings:
    base_url: str = option(
        default=DEFAULT_BASE_URL, help="API base URL; env MIMO_BASE_URL overrides")
    api_key_env: str = option(
        default="MIMO_API_KEY", help="environment variable holding the API key")
    api_key_file: Path | None = option(
        default=None, example="/etc/mimo-watchd/api-key",
        help="file holding the API key (instead of the environment); "
        "$CREDENTIALS_DIRECTORY/mimo-api-key is also tried")
    auth_header: str = option(
        default="api-key", choices=("api-key", "bearer"), help="how the key is sent")
    model: str = option(default="mimo-v2.5-asr", help="model name")
    language: str = option(default="auto", choices=LANGUAGES, help="transcription language")
    stream: bool = option(default=False, help="use server-sent events for responses")
    requests_per_minute: int = option(
        default=100, minimum=1,
        help="client-side request budget (account limit: 100); lower it when other clients "
             "share the account")
    tokens_per_minute: int = option(
        default=10000, minimum=100,
        help="client-side token budget (account limit: 10000); lower it when other clients "
             "share the account")
    tpm_counts: str = option(
        default="total", choices=("total", "prompt"),
        help="what the account's tokens-per-minute limit counts: prompt plus completion "
             "tokens, or prompt tokens only (undocumented by Xiaomi)")
    max_concurrency: int = option(
        # 16: enough in flight that a window's requests leave within a few latencies (8 left
        # 0.95 of the oracle's rate, `python -m bench pacing`); the account's own cap is not
        # published (mimo-api.md s.5): a 429 it causes lowers ours (ratelimit).
        default=16, minimum=1, maximum=64,
        help="requests in flight at once, at most (fewer while the account refuses more); "
             "also files worked on at once (their clips are decoded a CPU's worth at a time)")
    max_retries: int = option(
        default=4, minimum=0, maximum=20, help="retries of a transient failure within one attempt")
    backoff_initial_seconds: float = option(default=1.0, minimum=0.0, help="first retry delay")
    backoff_max_seconds: float = option(default=60.0, minimum=0.0, help="retry delay cap")
    connect_timeout_seconds: float = option(
        default=10.0, minimum=0.1, help="TCP/TLS connect timeout")
    timeout_base_seconds: float = option(
        default=30.0, minimum=0.1, help="read/write timeout for a request")
    timeout_per_audio_second: float = option(
        default=0.2, minimum=0.0, help="added to read/write timeouts per second of audio")
    max_request_b64_chars: int = option(
        default=9_500_000, minimum=50_000, maximum=10_485_760,
        help="largest base64 audio string sent in one request")
    price_per_hour: float = option(
        default=0.5, minimum=0.0,
        help="the price of one billed audio hour (published: 0.5 CNY, billed per second), for "
        "the cost in sidecars, job.done lines, metrics and status")
    currency: str = option(default="CNY", help="the currency of price_per_hour and daily_budget")
    daily_budget: float | None = option(
        default=None, minimum=0.0, example=10.0,
        help="once this much (in currency) is billed in a day, API work pauses (files stay "
        "queued) until the next day begins in `timezone`; no limit when empty")


@settings_class
class AudioSettings:
    max_clip_seconds: float = option(
        default=60.0, minimum=5.0, maximum=900.0,
        help="longest stretch of a recording sent in one request, cut in a pause; the model's "
        "accuracy drops sharply past ~2 minutes per request (300 is the 0.1 behaviour)")
    subtitle_clip_seconds: float = option(
        default=15.0, minimum=3.0, maximum=120.0,
        help="clip length aimed at when a watch writes srt or vtt (cue times are the clips' "
        "real cut points)")
    clip_format: str = option(
        default="mp3", choices=("mp3", "wav"), help="encoding of the clips sent")
    max_sample_rate: int = option(
        default=24000, minimum=8000, maximum=48000,
        help="clips keep the recording's sample rate up to this, never more (24000 is what the "
        "model works at; 16000 is the 0.1 behaviour)")
    skip_silence: bool = option(
        default=True,
        help="leave silences longer than skip_silence_seconds out of what is sent (never paid "
        "for), and make no request at all for a file without speech; false sends everything")
    skip_silence_seconds: float = option(
        default=2.0, minimum=0.2, maximum=600.0,
        help="silences at least this long are left out (but for silence_margin_seconds beside "
        "speech)")
    silence_margin_seconds: float = option(
        default=0.3, minimum=0.0, maximum=5.0,
        help="silence kept on each side of speech, so no word's onset or fade is cut")
    speech_above_floor_db: float = option(
        default=10.0, minimum=3.0, maximum=40.0,
        help="a sound counts as speech when it is this many dB above the file's own noise floor "
        "(a phone line's hiss is not speech); lower it if quiet words are left out")
    overlap_seconds: float = option(
        default=2.0, minimum=0.0, maximum=10.0,
        help="overlap of clips cut where no pause exists (the repeated words are removed)")

    # Options of 0.1: an upgraded config still starts, with a warning naming what replaced them.
    RETIRED: ClassVar[Mapping[str, Retired]] = {
        "max_chunk_seconds": Retired(
            "clips are at most audio.max_clip_seconds long (60 s by default, because the "
            "model's accuracy drops sharply past ~2 minutes of audio per request); set that "
            "option to choose another length"),
        "chunk_format": Retired("the encoding of the clips sent", renamed_to="clip_format"),
        "silence_threshold_db": Retired(
            "silence is judged against each file's own noise floor "
            "(audio.speech_above_floor_db)"),
        "silence_search_seconds": Retired(
            "each clip is cut in the quietest pause of its later half"),
    }


@settings_class
class LogSettings:
    level: str = option(
        default="info", choices=("debug", "info", "warning", "error"), help="minimum level")
    format: str = option(
        default="auto", choices=("auto", "json", "console"),
        help="json lines, console, or auto (json when not a terminal)")


@settings_class
class MetricsSettings:
    listen: str | None = option(
        default=None, example="127.0.0.1:9464", check=listen_address,
        help="host:port to serve /metrics and /healthz; off when empty")


@settings_class
class LedgerSettings:
    backend: str = option(
        default="sqlite", choices=("sqlite", "postgres"),
        help="sqlite: one file under state_dir, for one host; postgres: one database shared by "
        "a fleet of hosts (one inbox, one budget, every file paid once; needs the [postgres] "
        "extra)")
    dsn_env: str = option(
        default="MIMO_WATCHD_DSN",
        help="postgres: environment variable holding the connection string (a secret, like "
        "the API key: never logged)")
    dsn_file: Path | None = option(
        default=None, example="/etc/mimo-watchd/dsn",
        help="postgres: file holding the connection string (instead of the environment); "
        "$CREDENTIALS_DIRECTORY/mimo-watchd-dsn is also tried")
    host_id: str | None = option(
        default=None, example="transcriber-1",
        help="postgres: this daemon's name in the fleet, unique per daemon (default: the "
        "hostname)")
    lease_seconds: float = option(
        default=60.0, minimum=5.0, maximum=3600.0,
        help="postgres: how long a claim on a file outlives its holder's last renewal (renewed "
        "every third of it, and extended to cover each request before it is sent); a host "
        "that dies has its files taken over after this long")


@settings_class
class Settings:
    api: ApiSettings = section(default_factory=ApiSettings, help="how to reach the MiMo API")
    audio: AudioSettings = section(
        default_factory=AudioSettings, help="audio preparation and splitting of long recordings")
    timezone: str | None = option(
        default=None, example="Asia/Shanghai", check=check_zone,
        help="the operator's time zone (IANA name): when a day begins for api.daily_budget and "
        "the bill in status, and {arrived} in path templates; default: the system's")
    state_dir: Path = option(
        default=Path("state"), unset_in_example=True,
        help="folder for the ledger (SQLite), the status file and the instance lock; when "
        "unset: $STATE_DIRECTORY if set (systemd's StateDirectory=, the container's /data), "
        "else ./state beside this file")
    on_duplicate: str = option(
        default="reuse", choices=("reuse", "transcribe", "skip"),
        help="same content seen again: reuse the earlier transcript, transcribe again, or skip "
        "(move to processed without outputs)")
    max_attempts: int = option(
        default=5, minimum=1, maximum=100,
        help="attempts of a file with transient failures before it fails")
    max_interruptions: int = option(
        default=3, minimum=1, maximum=1000,
        help="times the daemon may die (crash, out-of-memory kill, kill -9) while processing "
        "one file, with no progress in between, before that file goes to failed_dir instead of "
        "being tried again")
    retry_delay_seconds: float = option(
        default=60.0, minimum=0.0,
        help="first delay before a failed attempt is tried again (doubles each attempt)")
    incomplete_timeout_seconds: float = option(
        default=600.0, minimum=0.0,
        help="how long a file that does not probe as whole audio is re-checked before it fails")
    rescan_interval_seconds: float = option(
        default=300.0, minimum=1.0, help="full rescan of every watch")
    pause_probe_seconds: float = option(
        default=60.0, minimum=0.1,
        help="while paused by an operator problem, retry this often")
    shutdown_timeout_seconds: float = option(
        default=60.0, minimum=0.0, help="on SIGTERM, wait this long for in-flight jobs")
    worker_stall_seconds: float = option(
        default=900.0, minimum=0.5,
        help="a job making no progress this long counts as hung: health turns bad and systemd "
        "watchdog pings stop")
    ledger: LedgerSettings = section(
        default_factory=LedgerSettings, help="where jobs and paid answers are recorded")
    log: LogSettings = section(default_factory=LogSettings, help="logging")
    metrics: MetricsSettings = section(
        default_factory=MetricsSettings, help="Prometheus metrics and health endpoint")
    watches: tuple[WatchSettings, ...] = option(help="folders to watch")
    # The file these settings were read from, and what reading it warned about: not options.
    source: Path | None = dataclasses.field(default=None)
    warnings: tuple[str, ...] = dataclasses.field(default=())


SCHEMA = options(Settings)
