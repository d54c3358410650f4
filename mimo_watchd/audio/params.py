"""``AudioParams``: every setting the audio layer needs, as one frozen value.

The audio package is a leaf: it never reads the daemon's configuration. The caller maps its
configuration onto ``AudioParams`` (the defaults below are the recommended ones). Today's older
behaviour (300 s chunks at 16 kHz, nothing skipped) is
``AudioParams(max_clip_seconds=300, skip_silence=False, max_sample_rate=16000)``.
"""

from __future__ import annotations

from dataclasses import dataclass

CLIP_FORMATS = ("mp3", "wav")


@dataclass(frozen=True)
class AudioParams:
    """How recordings are cut into clips, what silence is left out and how clips are encoded."""

    # Longest audio in one clip (seconds of source time; a clip never spans more). The model
    # degrades past ~2 minutes per request; 60 s is what the published measurement used.
    max_clip_seconds: float = 60.0
    # Clip length aimed at when subtitles are wanted (every skipped silence then ends a clip too),
    # so cue times are real cut points.
    subtitle_clip_seconds: float = 15.0
    clip_format: str = "mp3"
    # Clips keep the source's rate up to this (the model's front end works at 24 kHz); never more.
    max_sample_rate: int = 24_000
    # Leave out silences longer than skip_silence_seconds, keeping silence_margin_seconds of them
    # next to speech; a file with no speech at all gives no clip. False: send everything.
    skip_silence: bool = True
    skip_silence_seconds: float = 2.0
    silence_margin_seconds: float = 0.3
    # A frame is sound (not silence) when it is this many dB above the file's noise floor ...
    speech_above_floor_db: float = 10.0
    # ... and above this level (dBFS) whatever the floor: quieter is silence on any line ...
    silence_floor_db: float = -60.0
    # ... and it is sound whatever the floor when louder than this (dBFS): no line hisses this
    # loud, and a signal of constant loudness (gapless speech, music) is not line noise.
    sound_ceiling_db: float = -25.0
    # Shortest pause a clip may be cut in (where none exists, clips overlap instead).
    min_pause_seconds: float = 0.2
    overlap_seconds: float = 2.0
    # Largest base64 string one request may carry (the API's limit, with headroom).
    max_b64_chars: int = 9_500_000

    def __post_init__(self) -> None:
        problems = []
        if self.clip_format not in CLIP_FORMATS:
            problems.append(f"clip_format must be one of {', '.join(CLIP_FORMATS)}")
        if not self.max_clip_seconds >= 1.0 or not self.subtitle_clip_seconds >= 1.0:
            problems.append("clips must be allowed at least 1 s")
        if self.max_sample_rate < 8000:
            problems.append("max_sample_rate must be at least 8000")
        if not self.silence_floor_db < self.sound_ceiling_db <= 0.0:
            problems.append("silence_floor_db must be under sound_ceiling_db, itself <= 0")
        if self.skip_silence_seconds < 2 * self.silence_margin_seconds:
            problems.append("skip_silence_seconds must be at least twice silence_margin_seconds")
        if min(self.silence_margin_seconds, self.min_pause_seconds, self.overlap_seconds) < 0:
            problems.append("margins, pauses and overlaps cannot be negative")
        if problems:
            raise ValueError("; ".join(problems))
