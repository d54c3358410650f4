"""What the emulated model makes of a request's audio: the words it hears, the text it answers,
and how many completion tokens that text costs.

Three kinds of audio, told apart deterministically:

- tone audio (``tones``): the transcript is its words, so tests can check every word;
- other audio with content (a user's own recording): a placeholder that says it is the emulator
  and how long the audio was, so a new user sees the emulator heard it;
- silence, or audio under the energy gate: empty content, as the live service is believed to
  answer silence (mimo-api.md s.2 [INF]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import av

from mimo_watchd.emulator import responses
from mimo_watchd.emulator.audiofile import iter_decoded
from mimo_watchd.emulator.records import EmulatorConfig
from mimo_watchd.emulator.tones import Recognizer
from mimo_watchd.emulator.validation import AudioRequest, bad

SAMPLE_RATE = 16000  # the model works at 16 kHz; durations and tokens come from this decoding
# Audio with no tone word counts as content when at least this much of it is above the
# recogniser's energy gate (-34 dBFS); less (a click, a word's sliver at a cut) is silence.
CONTENT_SECONDS = 0.5
# KurtDu/mimo-asr-vllm, README "Long audio" (mimo-api.md s.7): one pass over 2.3-5 min recordings
# gave 22.9 % CER/WER, clips of <= 60 s cut at pauses 1.5 %. The emulator's words are otherwise
# exact, so past the quality window it loses that share of them.
LONG_AUDIO_LOSS = 0.229
LOOP_WORDS = 4  # the phrase a looping answer repeats: the first words of the transcript
LOOP_REPEATS = 40  # "dozens of times"
SILENCE_LOOP = "Thank you."  # what models loop on when there is nothing to transcribe


@dataclass(frozen=True)
class Heard:
    """The decoded audio of one request: its length, tone words and how much of it is loud."""

    samples: int
    words: list[str]
    loud_seconds: float

    @property
    def seconds(self) -> float:
        """Duration of the decoded audio."""
        return self.samples / SAMPLE_RATE


def hear(request: AudioRequest) -> Heard:
    """Decode a request's audio at 16 kHz and recognise it; 400 when PyAV cannot decode it."""
    recognizer = Recognizer(SAMPLE_RATE)
    try:
        for block in iter_decoded(
            request.audio, sample_rate=SAMPLE_RATE, container_format=request.container
        ):
            recognizer.feed(block)
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise bad(f"audio could not be decoded as {request.container}: {exc}") from None
    if recognizer.samples == 0:
        raise bad("audio contains no samples")
    return Heard(recognizer.samples, recognizer.finish(), recognizer.loud_seconds)


def answer(heard: Heard, config: EmulatorConfig) -> tuple[str, str, dict[str, Any]]:
    """The model's answer to ``heard``: its text, finish_reason and usage (before faults)."""
    text = answer_text(heard, spoken_words(heard, config.quality_window_seconds))
    completion = completion_tokens(text, heard.seconds, config.completion_tokens_per_second)
    finish = "stop"
    if completion > config.max_output_tokens:
        text = truncated(text, config.max_output_tokens / completion)
        finish, completion = "length", config.max_output_tokens
    return text, finish, responses.usage(heard.samples, SAMPLE_RATE, completion)


def spoken_words(heard: Heard, quality_window: float | None) -> list[str]:
    """The tone words the model writes: all of them, less ``LONG_AUDIO_LOSS`` of them (evenly
    spread) when the request holds more than ``quality_window`` seconds of audio."""
    if quality_window is None or heard.seconds <= quality_window:
        return list(heard.words)
    # Word i is lost when the running share of losses steps up at i: exactly
    # floor(n * LONG_AUDIO_LOSS) losses, spread over the whole request.
    return [w for i, w in enumerate(heard.words)
            if math.floor((i + 1) * LONG_AUDIO_LOSS) == math.floor(i * LONG_AUDIO_LOSS)]


def placeholder(seconds: float) -> str:
    """The answer for audio with content but no tone words."""
    return (f"This is the mimo-watchd emulator: it heard {seconds:.1f} seconds of audio without "
            "test-tone words and cannot transcribe real speech.")


def answer_text(heard: Heard, words: list[str]) -> str:
    """The model's text: the words as a sentence, else the placeholder, else nothing."""
    if heard.words:
        return " ".join(words) + "." if words else ""
    if heard.loud_seconds >= CONTENT_SECONDS:
        return placeholder(heard.seconds)
    return ""


def completion_tokens(text: str, seconds: float, per_second: float) -> int:
    """Completion tokens of an answer: ``per_second`` per second of audio (realistic usage,
    whatever the words), 1 (the end token) for an empty answer."""
    if not text:
        return 1
    return max(1, math.ceil(per_second * seconds - 1e-9))


def truncated(text: str, share: float) -> str:
    """The first ``share`` of the words of ``text``, without the final full stop (an answer cut
    off by its output limit)."""
    words = text.rstrip(".").split()
    return " ".join(words[: int(len(words) * share)])


def looping(text: str) -> str:
    """A looping answer: the first words of ``text`` (or a stock phrase) repeated dozens of
    times."""
    phrase = " ".join(text.rstrip(".").split()[:LOOP_WORDS]) + "." if text else SILENCE_LOOP
    return " ".join([phrase] * LOOP_REPEATS)
