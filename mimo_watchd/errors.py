"""The one error hierarchy of mimo-watchd.

Every failure the program reasons about is one of these; foreign exceptions (httpx in the
client, PyAV in audio, sqlite3 in the ledger, OSError from the file system in the job runner)
are translated at exactly one boundary each and chained with ``from exc``::

    MimoWatchdError
    ├── ConfigError                 invalid configuration; every problem listed with its key path
    ├── AudioError                  this input is not usable audio (permanent for the file)
    │   └── IncompleteAudioError    looks like audio still being written: re-check later
    ├── ApiError                    anything the MiMo API (or the way to it) answered
    │   ├── PermanentApiError       400, 421, content_filter: this input will never succeed
    │   ├── OutputTruncatedError    an answer cut short (length, repetition_truncation) for
    │   │                           audio too short to split again
    │   ├── TransientApiError       429, 5xx, timeouts, dropped connections, a stream cut
    │   │                           before its finish chunk, an answer that is no completion
    │   │   ├── RateLimitedError    429 specifically (slows the whole client down)
    │   │   └── ApiUnreachableError no connection to the API's host (DNS, refused, proxy, connect
    │   │                           timeout): pause all API work until it answers again
    │   └── OperatorError           401, 402, 403, 404, a base_url that cannot be used or
    │                               redirects: needs a human; pause all API work
    ├── BudgetReachedError          the day's api.daily_budget is billed: pause API work until
    │                               the next day begins (``resume_at``)
    ├── JobError                    a file could not be processed for a reason of its own
    │   │                           (unsafe path, move failed, vanished)
    │   ├── SourceChangedError      it is no longer there as queued (gone, replaced, a symlink)
    │   └── CrashLoopError          the daemon died while processing it, again and again
    ├── LedgerError                 the ledger's storage failed (sqlite3 errors, translated)
    │   ├── LedgerFullError         no space left for it: hold what is paid, pause, resume later
    │   └── LedgerLostError         corrupt, empty, deleted or replaced: refuse it, stop (78)
    ├── LeaseLostError              a fleet ledger: this process no longer holds (or cannot
    │                               show it holds) the claim on a job: it stops working on it
    └── AlreadyRunningError         another daemon holds the state folder's lock

``retryable`` says whether trying the same request again later can succeed; ``pauses`` says
whether the whole daemon must stop calling the API until an operator fixes something.
"""

from __future__ import annotations

from typing import Any


class MimoWatchdError(Exception):
    """Base of every error mimo-watchd raises on purpose."""

    retryable: bool = False
    pauses: bool = False

    @property
    def reason(self) -> str:
        """A one-line, human-readable reason (what goes into logs and error files)."""
        return str(self)


class ConfigError(MimoWatchdError):
    """The configuration is invalid; ``problems`` holds every finding as ``path: message``."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))

    def render(self) -> str:
        """All problems, one per line, each prefixed with the file."""
        where = f"{self.source}: " if self.source else ""
        return "\n".join(where + p for p in self.problems)


class AudioError(MimoWatchdError):
    """The file cannot be turned into audio the API accepts (corrupt, empty, not audio)."""


class IncompleteAudioError(AudioError):
    """Looks like audio still being written (truncated container): wait, then probe again."""

    retryable = True


class JobError(MimoWatchdError):
    """A file could not be processed for a reason of its own (unsafe path, vanished, move)."""


class SourceChangedError(JobError):
    """The file a job is for is no longer there as it was queued or transcribed: gone,
    replaced by other content, or now reached through a symlink. Nothing is done with what is
    there now (new content is its own job; a symlink is never followed)."""


class CrashLoopError(JobError):
    """The daemon died (crash, out-of-memory kill, kill -9) while processing this file, again
    and again without progress: most likely the file itself kills it, so it is not tried
    again automatically."""


class LedgerError(MimoWatchdError):
    """The ledger could not be read or written (disk full, corrupt file, locked, closed)."""


class LedgerFullError(LedgerError):
    """The state folder has no space left for the ledger: nothing is lost (what cannot be
    written is held in memory), but intake and API work wait until space is freed."""

    pauses = True


class LedgerLostError(LedgerError):
    """The ledger cannot be trusted: corrupt, empty, or deleted or replaced while in use.

    Carrying on (or starting afresh over it) would forget which files were already paid for,
    so the daemon refuses to start on it, or stops."""


class LeaseLostError(MimoWatchdError):
    """This process no longer holds the claim on a job's content (its lease expired after a
    freeze or a partition, or the database cannot be reached to show it still does): it sends
    nothing more and writes nothing more for that job, which is taken over once the lease has
    expired (by another host, or this one)."""


class AlreadyRunningError(MimoWatchdError):
    """Another daemon (``pid``) holds the state folder: two would take the same jobs."""

    def __init__(self, state_dir: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "a process whose pid is unknown"
        super().__init__(f"another mimo-watchd ({who}) is running on the state folder "
                         f"{state_dir}; stop it first (status, retry and check work meanwhile)")
        self.pid = pid


class ApiError(MimoWatchdError):
    """The MiMo API, or the network path to it, did not give a usable transcript."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.request_id = request_id
        self.attempts = 1

    def to_dict(self) -> dict[str, Any]:
        """What an error file or the ledger records about this error (never contains the key)."""
        return {
            "error": type(self).__name__,
            "reason": self.reason,
            "http_status": self.status,
            "api_error": self.body,
            "request_id": self.request_id,
            "attempts": self.attempts,
        }


class PermanentApiError(ApiError):
    """The API refused this input for good (400, 421, content_filter)."""


class OutputTruncatedError(ApiError):
    """An answer stopped short (``finish_reason`` length, or repetition_truncation) for audio
    already too short to be split again: the transcript would miss the rest."""


class TransientApiError(ApiError):
    """A failure that may go away by itself: retry with backoff."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimitedError(TransientApiError):
    """HTTP 429: the account's request or token budget is spent for now."""


class ApiUnreachableError(TransientApiError):
    """No connection to the API's host could be made (DNS failure, connection refused, a proxy
    down, a connect timeout): a network outage is the operator's problem, not the file's, so
    API work pauses (no attempt is spent) until the host answers again."""

    pauses = True

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"the API at {host} is unreachable ({detail})")
        self.host = host
        self.detail = detail

    @property
    def reason(self) -> str:
        """The outage alone (without the chunk a transcriber prefixes: it is no chunk's fault)."""
        return f"the API at {self.host} is unreachable ({self.detail})"


class OperatorError(ApiError):
    """Needs a human (bad key, no balance, region block, wrong URL or model): pause all API work."""

    pauses = True


class BudgetReachedError(MimoWatchdError):
    """The day's ``api.daily_budget`` is billed: API work pauses (files stay queued, no attempt
    is spent) until ``resume_at`` (a ``time.time()``: the next day in the operator's zone)."""

    pauses = True

    def __init__(self, message: str, *, resume_at: float) -> None:
        super().__init__(message)
        self.resume_at = resume_at
