"""The audio layer: probing recordings and cutting them into short clips cut at pauses, with
long silences left out, encoded while the file is still being decoded.

PyAV is used only inside this package; its exceptions leave it as ``AudioError`` /
``IncompleteAudioError``. The package never reads the daemon's configuration: callers map it
onto ``AudioParams``.

What callers use
----------------
``probe(source, name=None) -> AudioInfo``
    What a file is (sniffed from its bytes), its length, whether it is whole. ``source`` is a
    path, or an opened binary file (anything with ``fileno()``) or a bare descriptor, which is
    read through ``pread`` and never reopened by name (``name`` is then shown in messages).
``prepare(source, params, *, subtitles=False, name=None) -> PreparedAudio``
    Probes, then readies the clips. Decodes nothing more, except a wav/mp3 short enough to go
    as it is (``passthrough``: sent unchanged when nothing in it would be left out).
``PreparedAudio.iter_clips() -> Iterator[Clip]``
    The clips in order, planned and encoded lazily in one decode pass: the first one is out
    after about ``max_clip_seconds`` of audio is decoded; memory stays around one clip of
    samples. Deterministic: a retry or a restart cuts the very same clips (same ``key``s).
    Repeatable (each call decodes again) and closable midway.
``Clip`` (a ``ClipSpan`` plus ``data`` and ``mime``)
    ``index``; ``start``/``end`` (source seconds); ``pieces``: the source ranges actually sent,
    in order (more than one when a long silence inside was left out; ``source_time(t)`` maps
    a moment of the clip's audio to source time, for cue times); ``overlap_before``: seconds at
    its start repeating the previous clip (> 0 only where no pause could be found; the joiner
    removes the repeated words); ``sent_seconds``: the audio sent; ``key``: identifies that
    audio, for the journal (``"start-end"``, with every piece when there are several).
``PreparedAudio.summary -> AudioSummary`` (after ``iter_clips`` ran to the end)
    ``audio_seconds`` (the file), ``sent_seconds`` (all clips), ``clips``, the levels
    ``floor_db`` / ``peak_db`` / ``silence_db``, and ``no_speech``: the reason, with those
    levels, when the file holds no speech at all. Then ``iter_clips`` yields nothing and the
    caller makes no request.
``PreparedAudio.split(span) -> (ClipSpan, ClipSpan)`` and ``PreparedAudio.encode(span) -> bytes``
    For a clip answered ``finish_reason: length``: two halves cut where a left-out silence was,
    else in a pause near the middle, else with an overlap; each encoded alone (a seek and a
    decode of its range), as ``clip_mime``. Both are deterministic too.

What is sent
------------
Mono, at the source's sample rate up to ``max_sample_rate`` (24 kHz, what the model's front end
uses; never upsampled, except a source under 8 kHz to LAME's lowest rate), mp3 at 48 kbit/s by
default or 16-bit wav, each clip within ``max_b64_chars`` of base64 (the wav clip length shrinks
to fit). Clips span at most ``max_clip_seconds`` (60 s) of source time, or
``subtitle_clip_seconds`` (15 s) when subtitles are wanted.

Clips and silence (``levels``, ``gate``, ``plan``)
--------------------------------------------------
The level of every 10 ms frame (after a 20 ms moving-average high-pass: DC and rumble are not
sound) is measured against the file's own noise floor, a low percentile of its levels that
never rises once measured: a frame is sound when it is ``speech_above_floor_db`` over the
floor, never when under ``silence_floor_db`` and always when over ``sound_ceiling_db``. A
phone line's hiss is thus silence and quiet speech over a quiet line is not; measured with
``bench vad-compare``, this keeps every frame of tone words and of real speech over white,
pink and hum floors while sending none of the line noise, which WebRTC VAD and Silero VAD do
not beat (and Silero hears no tone words at all). Silences longer than
``skip_silence_seconds`` are left out but for ``silence_margin_seconds`` next to speech (also
at the file's start and end); stretches of under 0.1 s of sound (clicks) are silence.

A clip may join several speech stretches (each long silence between them shrinks to its two
margins), as long as it spans at most ``max_clip_seconds`` of source time: fewer requests (the
account allows 100 a minute), less per-second rounding and fewer ~21-token overheads than a
clip per stretch, while every clip keeps real source times (its ``pieces``), and a long silence
in a clip's later half still ends it. Elsewhere a clip ends in the latest of the quietest
pauses (>= ``min_pause_seconds``) of its later half, or, without one, at the limit with an
overlap. With ``subtitles``, every silence left out ends a clip, so cue times are real cut
points. ``skip_silence=False`` sends everything (and never reports ``no_speech``).
"""

from mimo_watchd.audio.encode import MIME, MP3_BITRATE
from mimo_watchd.audio.params import AudioParams
from mimo_watchd.audio.prepare import AudioSummary, Clip, ClipSpan, PreparedAudio, prepare
from mimo_watchd.audio.probe import AudioInfo, probe
from mimo_watchd.audio.source import Input, Source

__all__ = [
    "MIME",
    "MP3_BITRATE",
    "AudioInfo",
    "AudioParams",
    "AudioSummary",
    "Clip",
    "ClipSpan",
    "Input",
    "PreparedAudio",
    "Source",
    "prepare",
    "probe",
]
