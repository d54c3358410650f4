"""How long to wait before trying again: the one backoff rule (jobs, hooks, settling, ...).

The first wait is ``initial``; each further attempt doubles it, up to ``cap``. With ``jitter``
(a random number in [0, 1), e.g. ``random.random()``) the wait is a random point in the upper
half of that, so that many clients failing together do not retry together.
"""

from __future__ import annotations

_MAX_DOUBLINGS = 64  # 2**64 times any initial wait is forever; beyond it floats overflow


def delay(attempt: int, *, initial: float, cap: float | None = None,
          jitter: float | None = None) -> float:
    """The wait before try number ``attempt`` + 1 (``attempt`` 1: the first retry)."""
    wait = initial * 2.0 ** min(max(0, attempt - 1), _MAX_DOUBLINGS)
    if cap is not None:
        wait = min(cap, wait)
    return wait if jitter is None else wait * (0.5 + 0.5 * jitter)
