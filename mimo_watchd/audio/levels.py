"""The level profile: the RMS level (dBFS) of every 10 ms frame, and the noise floor it shows.

A frame is ``rate // 100`` samples (at 22.05 kHz, 220 samples: 9.98 ms), so every frame
boundary is a whole sample. Levels are 4 bytes per frame, computed while streaming; nothing
here holds more than one decoded block.

The noise floor is a low percentile (``FLOOR_PERCENTILE``) of every level seen so far, kept in a
histogram of 0.5 dB bins (fixed memory whatever the length). A low percentile rather than the
minimum: one dropout of digital silence in a hissing phone line must not pass for its floor;
and rather than the median: a voicemail may be speech for most of its length, yet the gaps
between words still reach the line's floor in more than 5 % of the frames.
"""

from __future__ import annotations

import numpy as np

MIN_DB = -120.0  # the level of digital silence (an all-zero frame)
FLOOR_PERCENTILE = 5.0
_BIN_DB = 0.5
_BINS = int(-MIN_DB / _BIN_DB) + 1


def frame_samples(rate: int) -> int:
    """Samples per level frame (10 ms, rounded down to a whole sample)."""
    return max(1, rate // 100)


def db(frames: np.ndarray) -> np.ndarray:
    """RMS level in dBFS (full scale = 1.0) of each row of int16 samples."""
    x = frames.astype(np.float32) / 32768.0
    power = np.mean(x * x, axis=1)
    levels: np.ndarray = (10.0 * np.log10(np.maximum(power, 10 ** (MIN_DB / 10)))).astype(
        np.float32)
    return levels


def mean_db(levels: np.ndarray) -> float:
    """The level of a stretch of frames: their mean power, in dBFS."""
    if not len(levels):
        return MIN_DB
    return float(10.0 * np.log10(np.mean(10.0 ** (levels.astype(np.float64) / 10.0))))


class LevelMeter:
    """Turns a stream of int16 blocks into the levels of the frames each block completes."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._rest = np.zeros(0, dtype=np.int16)
        self.samples = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        """The levels of the frames completed by ``block`` (possibly none)."""
        self.samples += len(block)
        data = np.concatenate((self._rest, block)) if len(self._rest) else block
        whole = len(data) - len(data) % self.frame
        self._rest = data[whole:].copy()
        return db(data[:whole].reshape(-1, self.frame))

    def finish(self) -> np.ndarray:
        """The level of the last, shorter frame (an empty array when there is none)."""
        rest, self._rest = self._rest, np.zeros(0, dtype=np.int16)
        return db(rest.reshape(1, -1)) if len(rest) else np.zeros(0, dtype=np.float32)


class NoiseFloor:
    """A running histogram of frame levels: the noise floor and the peak level so far."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BINS, dtype=np.int64)
        self.frames = 0
        self.peak_db = MIN_DB

    def add(self, levels: np.ndarray) -> None:
        """Counts more frames."""
        if not len(levels):
            return
        bins = np.clip(((levels - MIN_DB) / _BIN_DB).astype(np.int64), 0, _BINS - 1)
        self._counts += np.bincount(bins, minlength=_BINS)
        self.frames += len(levels)
        self.peak_db = max(self.peak_db, float(levels.max()))

    def floor_db(self) -> float:
        """The noise floor: the ``FLOOR_PERCENTILE`` level of the frames counted so far."""
        if not self.frames:
            return MIN_DB
        below = np.cumsum(self._counts)
        index = int(np.searchsorted(below, self.frames * FLOOR_PERCENTILE / 100.0))
        return MIN_DB + (index + 0.5) * _BIN_DB
