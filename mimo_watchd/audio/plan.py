"""Where to cut long audio: in the longest pause near each target, else with an overlap.

The input is a compact level profile: the RMS level in dBFS of every 10 ms of 16 kHz audio
(4 bytes per 10 ms: a 3-hour recording is ~1.1 M floats, 4.3 MB), measured while streaming.
Planning itself is pure arithmetic on that array, in samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME = 160  # samples per level frame: 10 ms at 16 kHz
MIN_PAUSE_FRAMES = 10  # a pause must last 100 ms to count (shorter dips can be inside a word)
_FLOOR_DB = -120.0
_BATCH = 16_000


class LevelMeter:
    """Accumulates the 10 ms RMS levels of a stream of int16 blocks."""

    def __init__(self) -> None:
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._levels: list[np.ndarray] = []
        self.samples = 0

    def feed(self, block: np.ndarray) -> None:
        """Adds the next block of samples."""
        self._pending.append(block)
        self._pending_len += len(block)
        self.samples += len(block)
        if self._pending_len >= _BATCH:
            self._flush(final=False)

    def levels(self) -> np.ndarray:
        """The level of every 10 ms frame (the last one may be shorter), as float32 dBFS."""
        self._flush(final=True)
        if not self._levels:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._levels)

    def _flush(self, *, final: bool) -> None:
        if not self._pending:
            return
        data = np.concatenate(self._pending)
        whole = len(data) - len(data) % FRAME
        rest = data[whole:]
        if whole:
            self._levels.append(db(data[:whole].reshape(-1, FRAME)))
        if final and len(rest):
            self._levels.append(db(rest.reshape(1, -1)))
            rest = rest[:0]
        self._pending, self._pending_len = ([rest], len(rest)) if len(rest) else ([], 0)


def db(frames: np.ndarray) -> np.ndarray:
    """RMS level in dBFS (full scale = 1.0) of each row of int16 samples."""
    x = frames.astype(np.float32) / 32768.0
    power = np.mean(x * x, axis=1)
    levels: np.ndarray = (10.0 * np.log10(np.maximum(power, 10 ** (_FLOOR_DB / 10)))).astype(
        np.float32)
    return levels


@dataclass(frozen=True)
class Cut:
    """A planned chunk in samples; ``overlap`` samples repeat the end of the previous chunk."""

    start: int
    end: int
    overlap: int


def best_pause(levels: np.ndarray, lo: int, hi: int, threshold_db: float) -> int | None:
    """The middle (in samples) of the best pause among frames ``[lo, hi)``, or None.

    Best means longest; among equally long pauses the quietest, then the latest.
    """
    lo, hi = max(lo, 0), min(hi, len(levels))
    if hi - lo < MIN_PAUSE_FRAMES:
        return None
    window = levels[lo:hi]
    silent = np.concatenate(([0], (window < threshold_db).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(silent))
    starts, ends = edges[0::2], edges[1::2]
    keep = ends - starts >= MIN_PAUSE_FRAMES
    if not keep.any():
        return None
    best = max(zip(starts[keep], ends[keep], strict=True),
               key=lambda r: (r[1] - r[0], -float(window[r[0] : r[1]].mean()), r[0]))
    return (lo + (int(best[0]) + int(best[1])) // 2) * FRAME


def plan(levels: np.ndarray, total: int, *, target: int, search: int, overlap: int,
         threshold_db: float) -> list[Cut]:
    """Cuts ``total`` samples into chunks of at most ``target`` samples.

    Each cut goes into the best pause within ``search`` samples before the target; where there
    is none, the cut falls at the target and the next chunk starts ``overlap`` samples earlier.
    """
    if target < 4 * FRAME:
        raise ValueError("chunks would be shorter than 40 ms")
    overlap = min(overlap, target // 4)
    search = min(search, target // 2)
    cuts: list[Cut] = []
    start, ov = 0, 0
    while total - start > target:
        aim = start + target
        at = best_pause(levels, -(-(aim - search) // FRAME), aim // FRAME, threshold_db)
        if at is not None and at > start:
            cuts.append(Cut(start, at, ov))
            start, ov = at, 0
        else:
            cuts.append(Cut(start, aim, ov))
            start, ov = aim - overlap, overlap
    cuts.append(Cut(start, total, ov))
    return cuts


def split(levels: np.ndarray, total: int, *, overlap: int, threshold_db: float) -> list[Cut]:
    """Two halves of a range of ``total`` samples, cut in a pause in its middle third if any."""
    third = total // 3
    at = best_pause(levels, -(-third // FRAME), (total - third) // FRAME, threshold_db)
    if at is not None:
        return [Cut(0, at, 0), Cut(at, total, 0)]
    mid, overlap = total // 2, min(overlap, total // 4)
    return [Cut(0, mid, 0), Cut(mid - overlap, total, overlap)]
