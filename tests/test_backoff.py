"""The one backoff rule."""

from __future__ import annotations

from mimo_watchd.backoff import delay


def test_the_wait_doubles_from_initial_up_to_the_cap() -> None:
    """1st retry: initial; each further one doubles; the cap bounds it; none is negative."""
    assert [delay(n, initial=0.25, cap=2.0) for n in range(0, 7)] == [
        0.25, 0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert delay(100, initial=60.0) == 60.0 * 2.0**64  # uncapped, yet finite
    assert delay(10_000, initial=1.0, cap=600.0) == 600.0


def test_jitter_picks_a_point_in_the_upper_half() -> None:
    """With jitter j in [0, 1) the wait is between half and all of the plain wait."""
    assert delay(3, initial=1.0, jitter=0.0) == 2.0
    assert delay(3, initial=1.0, jitter=0.5) == 3.0
    assert delay(3, initial=1.0, cap=2.5, jitter=0.999) < 2.5
