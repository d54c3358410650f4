"""Joining the transcripts of consecutive chunks into one text.

Rules, at each boundary between chunk ``i`` and chunk ``i + 1``:
- Spacing: one space, unless the last character on the left or the first on the right is CJK
  (Han, kana, CJK or full-width punctuation), which is written without spaces.
- Empty transcripts (silent chunks) are skipped.
- Cut in a pause (``overlapped[i + 1]`` false): both texts are kept whole, punctuation
  included. The model ends every chunk with sentence punctuation ("." on the emulator); at a
  pause that is usually a real sentence end, and guessing otherwise would be worse.
- Cut without a pause (``overlapped[i + 1]`` true): the right chunk starts ``overlap_seconds``
  before the cut, so its first words repeat the end of the left chunk. Up to ``_WINDOW`` words
  (CJK: characters, ``2 * _WINDOW`` of them) are compared, ignoring case and punctuation: the
  longest run that ends the left text and starts the right text is kept once. One garbled word
  at either edge (the audio of the word that straddles the cut is clipped on one side) may
  be skipped when at least two words still match. The left text's final "." or "。" is
  dropped there: the cut fell mid-sentence, so that full stop is an artefact of the cut.
Words therefore come out in order, each once, and compare equal to the spoken sequence when
punctuation is ignored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_WINDOW = 8  # words compared at an overlapped boundary (about two seconds of speech and more)
_ARTEFACT_STOPS = ".。．"
_TAIL_CHARS = 2000  # of the text joined so far, what an overlap is searched in
_CJK_RANGES = (
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3100, 0x31BF),  # bopomofo
    (0x31F0, 0x31FF),  # katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)
_UNIT = re.compile(r"[\u2e80-\u2fdf\u3040-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
                   r"\U00020000-\U0003ffff]|[^\s\u2e80-\u2fdf\u3040-\u31ff\u3400-\u4dbf"
                   r"\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]+")


def is_cjk(ch: str) -> bool:
    """True for characters of scripts written without spaces between words (and their
    punctuation)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


@dataclass(frozen=True)
class _Unit:
    """A word (or a single CJK character) with its place in the text and comparable form."""

    start: int
    end: int
    key: str
    cjk: bool


def _units(text: str) -> list[_Unit]:
    """Comparable units of ``text``: words, and CJK characters one by one; punctuation-only
    tokens are left out (they never decide a match)."""
    out = []
    for m in _UNIT.finditer(text):
        key = "".join(c for c in unicodedata.normalize("NFKC", m.group()).casefold()
                      if unicodedata.category(c)[0] in "LNM")
        if key:
            out.append(_Unit(m.start(), m.end(), key, is_cjk(m.group()[0])))
    return out


def _window(units: list[_Unit], from_end: bool) -> list[_Unit]:
    """The units at one edge of a text: ``_WINDOW`` words, or twice as many CJK characters."""
    picked, budget = [], 2 * _WINDOW
    for unit in reversed(units) if from_end else units:
        budget -= 1 if unit.cjk else 2
        if budget < 0:
            break
        picked.append(unit)
    return picked[::-1] if from_end else picked


def _overlap(left: list[_Unit], right: list[_Unit]) -> tuple[int, int] | None:
    """(left units to keep, right units to drop) so the repeated run is kept once, or None."""
    lk = [u.key for u in _window(left, True)]
    rk = [u.key for u in _window(right, False)]
    best: tuple[int, int] | None = None  # (matched units, -skipped units)
    found: tuple[int, int] | None = None
    for skip_l in (0, 1):
        for skip_r in (0, 1):
            least = 2 if skip_l or skip_r else 1
            for n in range(min(len(lk) - skip_l, len(rk) - skip_r), least - 1, -1):
                if lk[len(lk) - skip_l - n : len(lk) - skip_l] == rk[skip_r : skip_r + n]:
                    score = (n, -(skip_l + skip_r))
                    if best is None or score > best:
                        best, found = score, (len(left) - skip_l, skip_r + n)
                    break
    return found


def _merge(left: str, right: str) -> tuple[str, str]:
    """Removes from ``right`` the words that repeat the end of ``left`` (an overlapped cut)
    and the full stop the cut left at the end of ``left``."""
    lu, ru = _units(left), _units(right)
    found = _overlap(lu, ru)
    if found is not None:
        keep_left, drop_right = found
        if keep_left < len(lu):  # the left's last word was clipped by the cut
            left = left[: lu[keep_left - 1].end] if keep_left else ""
        right = right[ru[drop_right].start :] if drop_right < len(ru) else ""
    if right and left[-1:] in _ARTEFACT_STOPS and not left.endswith(".."):
        left = left[:-1]
    return left, right


def _glue(left: str, right: str) -> str:
    if not left or not right:
        return left + right
    sep = "" if is_cjk(left[-1]) or is_cjk(right[0]) else " "
    return left + sep + right


def join(texts: Sequence[str], overlapped: Sequence[bool]) -> str:
    """Joins chunk transcripts in order; ``overlapped[i]`` says chunk ``i`` repeats the end of
    chunk ``i - 1`` (it was cut without a pause), so repeated words are removed there."""
    return _joined(texts, overlapped)[0]


def parts(texts: Sequence[str], overlapped: Sequence[bool]) -> list[str]:
    """Each chunk's share of ``join(texts, overlapped)``, in order: its text less the words
    that repeat the previous chunk (and less what the next chunk's boundary trimmed from its
    end). ``join`` is exactly these, glued by the spacing rule."""
    out, spans = _joined(texts, overlapped)
    return [out[a:b].strip() for a, b in spans]


def _joined(texts: Sequence[str], overlapped: Sequence[bool]) -> tuple[str, list[tuple[int, int]]]:
    """The joined text and where in it each chunk's share lies."""
    if len(texts) != len(overlapped):
        raise ValueError(f"{len(texts)} texts but {len(overlapped)} overlap flags")
    out = ""
    spans: list[tuple[int, int]] = []
    for i, raw in enumerate(texts):
        text = raw.strip()
        if text and out and overlapped[i] and texts[i - 1].strip():
            head, tail = out[:-_TAIL_CHARS], out[-_TAIL_CHARS:]  # never re-scan the whole text
            tail, text = _merge(tail, text)
            out, text = (head + tail).rstrip(), text.strip()
            # The merge may shorten what earlier chunks gave (a clipped word, a full stop).
            spans = [(min(a, len(out)), min(b, len(out))) for a, b in spans]
        glued = _glue(out, text)
        spans.append((len(glued) - len(text), len(glued)))
        out = glued
    return out, spans
