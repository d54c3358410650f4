"""Whether a transcript is the model looping rather than what was said.

MiMo models sometimes loop: they write one phrase again and again, dozens of times, instead
of the rest of the audio (mimo-api.md s.7: a third-party MiMo client, tingxie, detects repeated
phrases and re-splits; MiMo chat models report ``finish_reason: repetition_truncation``).

People repeat themselves too: "no, no, no", refrains, chants, laughter, a dance count. So the
rule is conservative, and judged against the audio the text came from: a run of one phrase
repeated back to back is a loop only when it has at least ``MIN_COPIES`` copies and holds more
than the audio could:

- more than ``FAST`` tokens per second of the whole audio: nobody repeats anything that fast;
- or, for a phrase of two tokens or more repeated ``MANY`` times or more ("dozens"), more than
  ``NATURAL`` tokens per second of the whole audio: a chant at an ordinary pace fills at most
  that.

Tokens are words (lower-cased, punctuation dropped) and single CJK characters, so a Chinese
phrase and an English one count alike. ``tests/test_looping.py`` holds the corpus the
thresholds were tried on: real speech, dialogue, songs and chants in English and Chinese (none
flagged) next to looping outputs (all flagged).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

MIN_COPIES = 8
MANY = 24
FAST = 6.0  # tokens per second of audio
NATURAL = 3.0  # tokens per second of audio
MAX_PHRASE = 100  # tokens: a looped sentence is rarely longer (a Chinese one counts characters)

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


@dataclass(frozen=True)
class Loop:
    """A phrase repeated back to back ``copies`` times, ``tokens`` tokens in all."""

    phrase: str
    copies: int
    tokens: int

    def describe(self, seconds: float) -> str:
        """One line for logs and the sidecar: what repeated, how often, in how much audio."""
        return (f"looping output: {self.phrase!r} {self.copies} times in {seconds:.1f} s "
                "of audio")


def tokens(text: str) -> list[str]:
    """The words and CJK characters of ``text``, lower-cased."""
    return _TOKEN.findall(text.casefold())


def find_loop(text: str, seconds: float) -> Loop | None:
    """The repeated phrase that makes ``text`` a loop for ``seconds`` of audio, or None."""
    words = tokens(text)
    best: Loop | None = None
    for n in range(1, min(MAX_PHRASE, len(words) // MIN_COPIES) + 1):
        for start, matched in _runs(words, n):
            copies = matched // n + 1
            phrase = words[start:start + n]
            if copies < MIN_COPIES or not _primitive(phrase):
                continue
            loop = Loop(_joined(phrase), copies, copies * n)
            if _too_much(loop, n, seconds) and (best is None or loop.tokens > best.tokens):
                best = loop
    return best


def _too_much(loop: Loop, n: int, seconds: float) -> bool:
    if loop.tokens > FAST * seconds:
        return True
    return n >= 2 and loop.copies >= MANY and loop.tokens > NATURAL * seconds


def _runs(words: list[str], n: int) -> list[tuple[int, int]]:
    """Maximal stretches where each token equals the one ``n`` further: (start, length)."""
    out = []
    run = 0
    for j in range(len(words) - n):
        if words[j] == words[j + n]:
            run += 1
            continue
        if run:
            out.append((j - run, run))
        run = 0
    if run:
        out.append((len(words) - n - run, run))
    return out


def _joined(phrase: list[str]) -> str:
    """The phrase as text: words with spaces between, CJK characters without."""
    out = phrase[0]
    for prev, token in itertools.pairwise(phrase):
        out += token if _CJK_CHAR.match(prev) and _CJK_CHAR.match(token) else " " + token
    return out


def _primitive(phrase: list[str]) -> bool:
    """Whether ``phrase`` is not itself a shorter phrase repeated ("na na" is "na" twice)."""
    n = len(phrase)
    return not any(n % d == 0 and phrase == phrase[:d] * (n // d) for d in range(1, n))
