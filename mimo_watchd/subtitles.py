"""Subtitles (SRT and WebVTT) from a transcript's segments.

Each segment is one clip's text between two real cut points (a pause, or a silence left
out), so no cue straddles a cut, and cue times at segment edges are those of the audio. A
segment's text wider than one cue (two lines of ``LINE_WIDTH`` columns; a CJK character takes
two) is split into several cues: after a sentence's end where one fits, else after a clause's
punctuation, else between words (text written without spaces, such as Chinese, between
characters). The segment's audio time is shared out among its cues in proportion to their
length, and those times in the audio sent are mapped back to the recording through the
segment's ``pieces`` (where a silence was left out inside a clip, time jumps over it). Cue
times *within* a segment are therefore approximate: the API gives no word times.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mimo_watchd.timeline import Pieces, Segment

LINE_WIDTH = 42  # columns per line: the usual subtitle limit for Latin script
CUE_WIDTH = 2 * LINE_WIDTH  # two lines per cue
MIN_FILL = 0.4  # a cue ends early at a sentence end only once this share of a cue is filled
_SENTENCE_END = set(".!?…。！？")
_CLAUSE_END = set(",;:、，；：—")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Cue:
    """One subtitle: ``lines`` shown from ``start`` to ``end`` (seconds of the recording)."""

    start: float
    end: float
    lines: tuple[str, ...]


def width(text: str) -> int:
    """Columns ``text`` takes on screen: two for wide (CJK, full-width) characters."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cues(segments: Iterable[Segment]) -> list[Cue]:
    """The cues of ``segments`` (in order), none for a segment without text."""
    out: list[Cue] = []
    for segment in segments:
        text = _SPACES.sub(" ", segment.text).strip()
        if not text:
            continue
        parts = split(text)
        weights = [max(1, width(p.replace(" ", ""))) for p in parts]
        total, sent = sum(weights), sum(b - a for a, b in segment.pieces)
        done = 0
        for part, weight in zip(parts, weights, strict=True):
            start = _source_time(segment.pieces, sent * done / total, start=True)
            done += weight
            end = _source_time(segment.pieces, sent * done / total, start=False)
            out.append(Cue(round(start, 3), round(max(end, start), 3), lines(part)))
    return out


def split(text: str) -> list[str]:
    """``text`` in pieces of at most ``CUE_WIDTH`` columns, cut where reading pauses."""
    parts = []
    while width(text) > CUE_WIDTH:
        at = _best_break(text)
        parts.append(text[:at].strip())
        text = text[at:].strip()
    return [*parts, text] if text else parts


def _best_break(text: str) -> int:
    """Where to end the first cue of ``text`` (wider than a cue): the strongest break that
    fits (sentence end > clause end > between words or CJK characters), preferring cues
    filled at least ``MIN_FILL``; the latest of equals."""
    fits, filled, cols = [], [], 0
    for i, ch in enumerate(text[:-1], start=1):
        cols += width(ch)
        if cols > CUE_WIDTH:
            break
        strength = _strength(ch, text[i])
        if strength is not None:
            fits.append((strength, i))
            if cols >= MIN_FILL * CUE_WIDTH:
                filled.append((strength, i))
    if filled or fits:
        return max(filled or fits)[1]
    # One word wider than a cue: cut it where the cue is full.
    cols = 0
    for i, ch in enumerate(text):
        cols += width(ch)
        if cols > CUE_WIDTH:
            return max(1, i)
    return len(text)


def _strength(left: str, right: str) -> int | None:
    """How good a break between ``left`` and ``right`` is (None: inside a word)."""
    wide = _wide(left) or _wide(right)
    if left in _SENTENCE_END and (right == " " or wide):
        return 3
    if left in _CLAUSE_END and (right == " " or wide):
        return 2
    if right == " " or wide:
        return None if right in _SENTENCE_END | _CLAUSE_END else 1
    return None


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def lines(text: str) -> tuple[str, ...]:
    """A cue's text on one line, or on two of at most ``LINE_WIDTH`` where it is wider: broken
    where reading pauses most (as ``split`` does), then nearest the middle."""
    total = width(text)
    if total <= LINE_WIDTH:
        return (text,)
    best: tuple[int, float, int] | None = None  # (strength if both lines fit, closeness, at)
    cols = 0
    for i, ch in enumerate(text[:-1], start=1):
        cols += width(ch)
        strength = _strength(ch, text[i])
        if strength is None:
            continue
        fits = cols <= LINE_WIDTH and total - cols - (text[i] == " ") <= LINE_WIDTH
        key = (strength if fits else -1, -abs(cols - total / 2), i)
        if best is None or key > best:
            best = key
    if best is None:
        return (text,)
    at = best[2]
    return (text[:at].strip(), text[at:].strip())


def _source_time(pieces: Pieces, sent: float, *, start: bool) -> float:
    """The recording's time ``sent`` seconds into the audio of ``pieces``; an instant where a
    left-out silence was is the end of the piece before it for a cue's ``end``, the start of
    the piece after it for a cue's ``start``."""
    for a, b in pieces:
        if sent < b - a or (not start and sent <= b - a):
            return a + max(0.0, sent)
        sent -= b - a
    return pieces[-1][1]


def srt(cue_list: Sequence[Cue]) -> str:
    """The SubRip text of ``cue_list``: numbered cues, ``HH:MM:SS,mmm`` times."""
    return "".join(f"{n}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n"
                   + "\n".join(c.lines) + "\n\n" for n, c in enumerate(cue_list, start=1))


def vtt(cue_list: Sequence[Cue]) -> str:
    """The WebVTT text of ``cue_list`` (cue text escaped: ``&``, ``<`` and ``>``)."""
    body = "".join(f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n"
                   + "\n".join(_escape(line) for line in c.lines) + "\n\n" for c in cue_list)
    return "WEBVTT\n\n" + body


def _escape(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _stamp(seconds: float, comma: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{comma}{ms:03d}"
