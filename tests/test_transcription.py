"""One file through the pipeline, in-process against the emulator: the first request leaves
while the file is still being decoded, no speech means no request, and errors read through a
descriptor name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mimo_watchd import joining, transcription
from mimo_watchd.audio import PreparedAudio
from mimo_watchd.client import MimoClient, Transcript
from mimo_watchd.config import default_audio_settings
from mimo_watchd.emulator import Emulator, tones
from mimo_watchd.errors import AudioError
from mimo_watchd.transcription import FileTranscriber
from tests.test_long import as_words, client_for, word_sequence, write_long


class Watching:
    """The real client, noting at its first request whether the file's decode had ended."""

    def __init__(self, client: MimoClient, prepared: list[PreparedAudio]) -> None:
        self.client = client
        self.api = client.api
        self.prepared = prepared
        self.decoded_before_first: bool | None = None

    @property
    def stopping(self) -> bool:
        return self.client.stopping

    def transcribe(self, *args: Any, **kw: Any) -> Transcript:
        if self.decoded_before_first is None:
            try:
                self.prepared[0].summary  # noqa: B018 - raises until the decode pass ends
                self.decoded_before_first = True
            except RuntimeError:
                self.decoded_before_first = False
        return self.client.transcribe(*args, **kw)


def test_the_first_request_leaves_while_the_file_is_still_decoded(
        emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one request in flight the pipeline decodes at most two clips ahead, so a
    5-minute file (5 clips) cannot be decoded to its end before its first request: it is sent
    while the rest is still being read, and the words still come out in order."""
    words = word_sequence(600, seed=51)
    path = write_long(tmp_path / "five.flac", words, gapless=False, word_seconds=0.3, fmt="flac")
    prepared: list[PreparedAudio] = []
    real_prepare = transcription.prepare

    def prepare(*args: Any, **kw: Any) -> PreparedAudio:
        prepared.append(real_prepare(*args, **kw))
        return prepared[-1]

    monkeypatch.setattr(transcription, "prepare", prepare)
    client = Watching(client_for(emu, max_concurrency=1), prepared)
    try:
        result = FileTranscriber(client, default_audio_settings(),  # type: ignore[arg-type]
                                 language="auto").run(path)
    finally:
        client.client.close()
    assert client.decoded_before_first is False
    assert len(result.chunks) >= 5 and as_words(result.text) == words


def test_no_speech_makes_no_request_and_says_why(emu: Emulator, tmp_path: Path) -> None:
    """A minute of line hiss: no clip, no request; the reason names the levels measured. With
    skip_silence off the same file is sent, and the empty answer is the reason."""
    rng = np.random.default_rng(5)
    hiss = rng.normal(0, 0.003 * 32767, 60 * 16000).astype(np.int16)
    path = tmp_path / "hiss.wav"
    tones.write_samples(path, hiss, 16000, "wav")
    client = client_for(emu)
    try:
        quiet = FileTranscriber(client, default_audio_settings(), language="auto").run(path)
        assert not emu.calls and not quiet.chunks and quiet.text == ""
        assert quiet.summary is not None and quiet.summary.clips == 0
        assert quiet.no_speech_reason == quiet.summary.no_speech
        assert f"noise floor {quiet.summary.floor_db:.1f} dBFS" in (quiet.no_speech_reason or "")
        sent = FileTranscriber(client, default_audio_settings(skip_silence=False),
                               language="auto").run(path)
    finally:
        client.close()
    assert len(emu.calls) == len(sent.chunks) == 1 and sent.text == ""
    assert sent.no_speech_reason == "no speech: the API heard none in 1 clip(s) (60.0 s of audio)"


def test_errors_through_a_descriptor_name_the_file(emu: Emulator, tmp_path: Path) -> None:
    """An opened file that is not audio fails with its given name in the message, never the
    descriptor it was read through."""
    path = tmp_path / "notes.wav"
    path.write_text("definitely not audio\n" * 50)
    client = client_for(emu)
    try:
        with path.open("rb") as f, pytest.raises(AudioError) as caught:
            FileTranscriber(client, default_audio_settings(), language="auto").run(
                f.fileno(), name="/srv/inbox/notes.wav", sha256="0" * 64)
    finally:
        client.close()
    assert "/srv/inbox/notes.wav" in str(caught.value)
    assert "descriptor" not in str(caught.value) and "/proc/" not in str(caught.value)
    assert not emu.calls


def test_each_clip_has_its_share_of_the_joined_text() -> None:
    """``joining.parts`` splits exactly what ``join`` returns: words an overlapped clip repeats
    stay with the clip before (once), the full stop a cut without a pause left goes; empty
    clips have no share."""
    texts = ["alpha bravo charlie.", "charlie delta echo.", "", "好的，我们走吧。", "吧。明天见。",
             "foxtrot golf."]
    overlapped = [False, True, False, False, True, True]
    parts = joining.parts(texts, overlapped)
    assert parts == ["alpha bravo charlie", "delta echo.", "", "好的，我们走吧", "明天见",
                     "foxtrot golf."]
    glued = ""
    for part in filter(None, parts):
        glued = joining._glue(glued, part)
    assert glued == joining.join(texts, overlapped)
