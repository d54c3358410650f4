"""The level profile: the RMS level (dBFS) of every 10 ms frame, and the noise floor it shows.

A frame is ``rate // 100`` samples (at 22.05 kHz, 220 samples: 9.98 ms), so every frame
boundary is a whole sample. Levels are 4 bytes per frame, computed while streaming; nothing
here holds more than one decoded block.

Levels are measured after a linear-phase high-pass: each sample less the mean of the 20 ms
centred on it. A DC offset and drift or rumble under ~20 Hz are not sound (they made the level
of pink noise wander over 13 dB instead of 6.7, and a DC offset would pass for a noise floor);
the mean has nulls at multiples of ~50 Hz, so mains hum keeps a steady level (a per-frame
detrend made 50 Hz hum alternate by 16 dB from frame to frame), and nothing from 50 Hz up
changes by more than 1.3 dB.

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
    """RMS level in dBFS of each row of float samples (full scale = 1.0)."""
    power = np.mean(frames * frames, axis=1)
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
        self.half = frame  # the high-pass mean spans 10 ms either side of each sample
        self.samples = 0
        self._raw = np.zeros(0, dtype=np.float64)  # samples from position _origin on
        self._origin = 0
        self._done = 0  # frames whose level was returned

    def feed(self, block: np.ndarray) -> np.ndarray:
        """The levels of the frames completed by ``block`` (possibly none)."""
        self._raw = np.concatenate((self._raw, block.astype(np.float64) / 32768.0))
        self.samples += len(block)
        return self._levels(max(0, self.samples - self.half) // self.frame)

    def finish(self) -> np.ndarray:
        """The levels of the last frames (the very last one may be shorter)."""
        return self._levels(-(-self.samples // self.frame))

    def _levels(self, upto: int) -> np.ndarray:
        """Levels of frames ``[_done, upto)``, whose high-pass windows are all decoded (or
        end with the file)."""
        if upto <= self._done:
            return np.zeros(0, dtype=np.float32)
        f, half = self.frame, self.half
        a, b = self._done * f, min(upto * f, self.samples)
        lo, hi = max(a - half, 0), min(b + half, self.samples)
        seg = self._raw[lo - self._origin : hi - self._origin]
        total = np.concatenate(([0.0], np.cumsum(seg)))
        n = np.arange(a, b)
        w0, w1 = np.maximum(n - half, 0) - lo, np.minimum(n + half + 1, self.samples) - lo
        y = seg[n - lo] - (total[w1] - total[w0]) / (w1 - w0)
        whole = len(y) - len(y) % f
        levels = db(y[:whole].reshape(-1, f))
        if whole < len(y):
            levels = np.concatenate((levels, db(y[whole:].reshape(1, -1))))
        self._done = upto
        keep = max(upto * f - half, 0) - self._origin
        if keep > 0:
            self._raw, self._origin = self._raw[keep:], self._origin + keep
        return levels


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
