"""``PcmBuffer``: the decoded samples that a clip not yet decided may still need."""

from __future__ import annotations

from collections import deque

import numpy as np


class PcmBuffer:
    """Decoded int16 samples from ``start`` to ``end`` (sample positions in the file), held as
    the decoder's blocks; older blocks are released as the planner moves on."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self.start = 0
        self.end = 0

    def append(self, block: np.ndarray) -> None:
        """Adds the next decoded block."""
        self._blocks.append(block)
        self.end += len(block)

    def take(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)``, all held."""
        assert self.start <= a <= b <= self.end, (self.start, a, b, self.end)
        parts, pos = [], self.start
        for block in self._blocks:
            lo, hi = max(a, pos), min(b, pos + len(block))
            if lo < hi:
                parts.append(block[lo - pos : hi - pos])
            pos += len(block)
            if pos >= b:
                break
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def release(self, before: int) -> None:
        """Forgets the whole blocks that end at or before ``before``."""
        while self._blocks and self.start + len(self._blocks[0]) <= before:
            self.start += len(self._blocks.popleft())
