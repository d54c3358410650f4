"""The claim a job's requests are sent under, checked by the client before every request.

With a fleet ledger a job may send a request only while its process holds the job's claim
for longer than that request can take (a paid answer must never arrive for a job another
host has taken over meanwhile). The job runner binds its ledger's check for the job's whole
context (the transcriber's chunk threads copy that context); the client calls
:func:`before_send` with the request's deadline right before each HTTP request. Outside a job
(the ``transcribe`` command) nothing is bound and nothing is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Check = Callable[[float], None]  # raises LeaseLostError unless held for that many seconds

_current: ContextVar[Check | None] = ContextVar("mimo_watchd_claim_check", default=None)


@contextmanager
def bound(check: Check) -> Iterator[None]:
    """Requests sent in this context (and contexts copied from it) are checked by ``check``."""
    token = _current.set(check)
    try:
        yield
    finally:
        _current.reset(token)


def before_send(seconds: float) -> None:
    """Raises LeaseLostError unless the job this request is for stays ours ``seconds`` more."""
    check = _current.get()
    if check is not None:
        check(seconds)
