"""``SpeechGate``: which frames are sound, and which silences are long enough to leave out.

Pure arithmetic on levels, fed incrementally; every decision depends on the levels alone, never
on how they were batched (a retry or a restart after a crash must cut the very same clips):

1. *Sound*: a frame is sound when its level is above the silence level
   ``floor + above_floor_db``, kept between ``silence_floor_db`` and ``sound_ceiling_db``, the
   floor being the file's own (``levels.NoiseFloor``): a phone line's hiss is not sound, quiet
   speech over a quiet line is. The floor is measured once ``WARMUP`` frames are in (or at the
   end of a shorter file), then again every ``STEP`` frames from all frames so far; it never
   rises (minutes of speech without a pause must not pass for the floor), and each frame is
   judged once, by the silence level in force when its step completed.
2. *Speech stretches*: sound frames joined across silences of at most ``skip`` frames. A stretch
   holding fewer than ``MIN_SOUND`` sound frames (clicks, a crackle, a hang-up's clunk) is
   silence too.
3. *Kept frames*: each stretch plus ``margin`` frames of silence on either side (no onset is
   cut); the rest, silence longer than ``skip`` less the margins, is left out. Silence at the
   start or the end of the file follows the same rule: kept whole when it lasts at most
   ``skip`` frames. With ``skip`` ``None`` every frame is kept.

Decisions lag the input by at most ``skip + margin`` frames (``WARMUP`` at the start), so
``known`` advances while the file is still being decoded. Only frames from ``base`` on are held;
the caller releases older ones.
"""

from __future__ import annotations

import numpy as np

from mimo_watchd.audio.levels import NoiseFloor

WARMUP = 3000  # frames (30 s) seen before the first judgement: enough to find the floor
STEP = 100  # frames (1 s) between updates of the silence level
MIN_SOUND = 10  # frames (100 ms) of sound that make a stretch speech


class FrameTrack:
    """A growing per-frame array of which only frames from ``base`` on are held."""

    def __init__(self, dtype: type) -> None:
        self.base = 0
        self.data: np.ndarray = np.zeros(0, dtype=dtype)

    @property
    def end(self) -> int:
        """The frame after the last one held."""
        return self.base + len(self.data)

    def append(self, values: np.ndarray) -> None:
        """Adds the next frames."""
        if len(values):
            self.data = np.concatenate((self.data, values.astype(self.data.dtype)))

    def get(self, start: int, end: int) -> np.ndarray:
        """Frames ``[start, end)`` (all held)."""
        assert self.base <= start <= end <= self.end, (self.base, start, end, self.end)
        return self.data[start - self.base : end - self.base]

    def release(self, before: int) -> None:
        """Forgets the frames before ``before``."""
        cut = min(before, self.end) - self.base
        if cut > 0:
            self.data = self.data[cut:].copy()
            self.base += cut


class SpeechGate:
    """Judges frames as sound or silence and decides which are kept (see the module doc)."""

    def __init__(self, *, skip: int | None, margin: int, above_floor_db: float,
                 silence_floor_db: float, sound_ceiling_db: float) -> None:
        self.skip = skip
        self.margin = margin
        self.above_floor_db = above_floor_db
        self.silence_floor_db = silence_floor_db
        self.sound_ceiling_db = sound_ceiling_db
        self.noise = NoiseFloor()
        self.floor_db = 0.0  # the lowest floor measured so far
        self.levels = FrameTrack(np.float32)
        self.sound = FrameTrack(np.bool_)
        self.keep = FrameTrack(np.bool_)
        self.silence_level = FrameTrack(np.float32)  # the silence level each frame was judged by
        self.silence_db = silence_floor_db  # the silence level in force
        self.kept_frames = 0  # frames kept so far
        self._stretch: int | None = None  # first sound frame of the open stretch
        self._last = 0  # frame after the open stretch's last sound frame
        self._count = 0  # sound frames in the open stretch

    @property
    def known(self) -> int:
        """Frames before this one have a final keep decision."""
        return self.keep.end

    @property
    def judged(self) -> int:
        """Frames before this one have been judged sound or silence."""
        return self.sound.end

    def feed(self, levels: np.ndarray) -> None:
        """Adds the levels of the next frames and decides what can be decided."""
        self.levels.append(levels)
        while True:
            step_end = max(WARMUP, self.judged + STEP)
            if self.levels.end < step_end:
                return
            self._judge(step_end)

    def finish(self) -> None:
        """The input ended: decides every remaining frame."""
        end = self.levels.end
        self._judge(end)
        if self.skip is not None and self._stretch is not None:
            self._close(end, final=True)
        self._extend(end, self.skip is None)

    def release(self, before: int) -> None:
        """Forgets frames before ``before`` (they must be decided)."""
        before = min(before, self.known)
        for track in (self.levels, self.sound, self.keep, self.silence_level):
            track.release(before)

    def _judge(self, end: int) -> None:
        start = self.judged
        self.noise.add(self.levels.get(start, end))
        self.floor_db = min(self.floor_db, self.noise.floor_db())
        self.silence_db = min(max(self.floor_db + self.above_floor_db, self.silence_floor_db),
                              self.sound_ceiling_db)
        sound = self.levels.get(start, end) > self.silence_db
        self.sound.append(sound)
        self.silence_level.append(np.full(end - start, self.silence_db, np.float32))
        if self.skip is None:
            self._extend(end, True)
            return
        edges = np.flatnonzero(np.diff(np.concatenate(([0], sound.astype(np.int8), [0]))))
        for a, b in zip(edges[0::2] + start, edges[1::2] + start, strict=True):
            if self._stretch is not None and a - self._last > self.skip:
                self._close(end)
            if self._stretch is None:
                self._stretch, self._count = int(a), 0
            self._last = int(b)
            self._count += int(b - a)
        if self._stretch is not None and end - self._last > self.skip:
            self._close(end)
        self._settle(end)

    def _close(self, end: int, *, final: bool = False) -> None:
        """Ends the open stretch (at the end of the file when ``final``): keeps it with its
        margins if it is speech."""
        assert self._stretch is not None and self.skip is not None
        if self._count >= MIN_SOUND:
            self._extend(self._first_kept(self._stretch), False)
            short_tail = final and end - self._last <= self.skip
            self._extend(end if short_tail else min(self._last + self.margin, end), True)
        self._stretch = None

    def _settle(self, end: int) -> None:
        """Decides the frames that no later frame can change, up to ``end`` (judged)."""
        assert self.skip is not None
        if self._stretch is None:
            if self.known or end > self.skip:  # a short silence at the start may still stay
                self._extend(end - self.margin, False)  # a later stretch keeps only its margin
            return
        self._extend(self._first_kept(self._stretch), False)
        if self._count >= MIN_SOUND:
            self._extend(min(self._last + self.margin, end), True)

    def _first_kept(self, stretch: int) -> int:
        """The first frame kept for a stretch starting at ``stretch``: the file's start when
        nothing was decided before it and the silence before it is short."""
        assert self.skip is not None
        return 0 if not self.known and stretch <= self.skip else stretch - self.margin

    def _extend(self, to: int, keep: bool) -> None:
        if to > self.known:
            if keep:
                self.kept_frames += to - self.known
            self.keep.append(np.full(to - self.known, keep))
