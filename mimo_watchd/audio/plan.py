"""Where clips are cut: in the quietest pause of each clip's later half, at a skipped silence,
or, where neither exists, at the limit with an overlap. Pure arithmetic on frames.

``Planner`` turns the gate's decisions (``gate.SpeechGate``) into clips while the file is
still being decoded. A clip starts at a kept frame and spans at most ``target`` frames of
source time; the frames it sends are its kept ranges (``pieces``), so a silence left out inside
it is not sent. Where it ends, given the frames ``[start + target // 2, start + target)``:

1. a silence that is left out there: the clip ends where the last such silence begins, and the
   next clip starts at the next kept frame (with ``end_at_gaps``, as for subtitles, *every*
   silence left out ends a clip, wherever it lies);
2. else the latest of the quietest pauses of at least ``min_pause`` frames there (those within
   ``QUIET_TOLERANCE_DB`` of the quietest): the clip ends in its middle, where the next starts;
3. else at the limit, and the next clip starts ``overlap`` frames earlier (the joiner removes
   the repeated words).

A clip is decided only once every frame up to its limit is (at the end of the file, the rest
is one clip), so the plan depends on the levels alone, never on how they were batched.
``halve`` re-splits one clip (the model's output was cut off) by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimo_watchd.audio.gate import SpeechGate
from mimo_watchd.audio.levels import mean_db

# Pauses this close to the quietest count as equally quiet: on a noisy line the level of a
# pause varies by a dB or two at random, which must not decide where clips end.
QUIET_TOLERANCE_DB = 3.0


@dataclass(frozen=True)
class Cut:
    """A planned clip in frames: the kept ranges it sends, in order, and the frames at its
    start that repeat the end of the previous clip."""

    pieces: tuple[tuple[int, int], ...]
    overlap: int
    silence_db: float  # the silence level its frames were judged by


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges where ``mask`` is true."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def quiet_pauses(sound: np.ndarray, levels: np.ndarray, min_pause: int) -> list[tuple[int, int]]:
    """The runs of at least ``min_pause`` silent frames whose level is within
    ``QUIET_TOLERANCE_DB`` of the quietest such run."""
    pauses = [(a, b) for a, b in runs(~sound) if b - a >= max(min_pause, 1)]
    if not pauses:
        return []
    quiet = [mean_db(levels[a:b]) for a, b in pauses]
    return [p for p, q in zip(pauses, quiet, strict=True) if q <= min(quiet) + QUIET_TOLERANCE_DB]


class Planner:
    """Cuts clips of at most ``target`` frames as the gate decides frames (see the module doc)."""

    def __init__(self, gate: SpeechGate, *, target: int, overlap: int, min_pause: int,
                 end_at_gaps: bool) -> None:
        if target < 4:
            raise ValueError("clips would be shorter than 40 ms")
        self.gate = gate
        self.target = target
        self.overlap = min(overlap, target // 4)
        self.min_pause = min_pause
        self.end_at_gaps = end_at_gaps
        self.next = 0  # the next clip starts at the first kept frame from here
        self._overlap = 0

    def feed(self, levels: np.ndarray) -> list[Cut]:
        """Adds the levels of the next frames; returns the clips that are now decided."""
        self.gate.feed(levels)
        return self._plan(final=False)

    def finish(self) -> list[Cut]:
        """The input ended: returns the remaining clips."""
        self.gate.finish()
        return self._plan(final=True)

    def _plan(self, *, final: bool) -> list[Cut]:
        gate = self.gate
        cuts: list[Cut] = []
        while True:
            known = gate.known
            kept = np.flatnonzero(gate.keep.get(self.next, known))
            if not len(kept):
                self._move(known)
                return cuts
            start = self.next + int(kept[0])
            self._move(start)
            limit = start + self.target
            keep = gate.keep.get(start, known)
            end, resume = self._end(start, limit, keep, final=final)
            if end is None:
                return cuts
            pieces = tuple((start + a, start + b) for a, b in runs(keep[: end - start]))
            cuts.append(Cut(pieces, self._overlap,
                            float(gate.silence_level.get(end - 1, end)[0])))
            self._overlap = max(0, end - resume)
            self._move(resume)

    def _end(self, start: int, limit: int, keep: np.ndarray, *,
             final: bool) -> tuple[int | None, int]:
        """Where the clip from ``start`` ends and where the next one resumes (None: not yet
        decided; ``keep`` holds the decisions from ``start`` on)."""
        if self.end_at_gaps:
            gaps = np.flatnonzero(~keep[: limit - start])
            if len(gaps):
                return start + int(gaps[0]), start + int(gaps[0])
        known = start + len(keep)
        if known <= limit:
            if not final:
                return None, start
            return start + int(np.flatnonzero(keep)[-1]) + 1, known
        lo = start + self.target // 2
        gaps = np.flatnonzero(~keep[lo - start : limit - start])
        if len(gaps):
            end = start + int(np.flatnonzero(keep[: lo - start + int(gaps[-1])])[-1]) + 1
            return end, end
        pauses = quiet_pauses(self.gate.sound.get(lo, limit), self.gate.levels.get(lo, limit),
                              self.min_pause)
        if pauses:
            a, b = pauses[-1]  # the latest: clips as long as allowed, so fewer of them
            return lo + (a + b) // 2, lo + (a + b) // 2
        return limit, limit - self.overlap

    def _move(self, frame: int) -> None:
        """The next clip starts at ``frame`` or later: frames before it are no longer needed."""
        self.next = frame
        self.gate.release(frame)

def halve(levels: np.ndarray, joins: list[int], *, silence_db: float, min_pause: int,
          overlap: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Two halves ``(start, end, overlap)`` of a clip's ``len(levels)`` sent frames.

    The cut goes where one of its kept ranges ends (``joins``: frames where a left-out silence
    was) nearest the middle, else in the quiet pause nearest the middle within its middle
    third, else at the middle with ``overlap`` frames repeated.
    """
    n = len(levels)
    lo, hi = n // 3, n - n // 3
    inside = [j for j in joins if lo <= j < hi]
    if inside:
        at = min(inside, key=lambda j: (abs(2 * j - n), j))
        return (0, at, 0), (at, n, 0)
    pauses = quiet_pauses(levels[lo:hi] > silence_db, levels[lo:hi], min_pause)
    if pauses:
        a, b = min(pauses, key=lambda r: (abs(2 * lo + r[0] + r[1] - n), r[0]))
        at = lo + (a + b) // 2
        return (0, at, 0), (at, n, 0)
    mid, overlap = n // 2, min(overlap, n // 4)
    return (0, mid, 0), (mid - overlap, n, overlap)
