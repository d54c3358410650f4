"""A file whose chunks are not all sent when the client stops is never a finished transcript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mimo_watchd.config import default_api_settings, default_audio_settings
from mimo_watchd.emulator import tones
from mimo_watchd.errors import TransientApiError
from mimo_watchd.protocol import Transcript
from mimo_watchd.transcription import FileTranscriber


class StoppingClient:
    """Answers the first chunk, then reports that it is shutting down (SIGTERM's deadline)."""

    def __init__(self) -> None:
        self.api = default_api_settings(max_concurrency=1)
        self.stopping = False
        self.sent = 0

    def transcribe(self, data: bytes, mime: str, duration: float, **_: Any) -> Transcript:
        self.sent += 1
        self.stopping = True
        return Transcript(text="alpha.", finish_reason="stop", request_id="r", usage={},
                          attempts=1, api_seconds=0.0, raw={})


def test_stopping_mid_file_fails_the_attempt(tmp_path: Path) -> None:
    """Chunks left unsent raise a retryable error instead of a transcript missing them."""
    path = tones.write(tmp_path / "long.flac", list(tones.WORDS[:30]), "flac")
    audio = default_audio_settings(max_clip_seconds=5.0)
    client = StoppingClient()
    runner = FileTranscriber(client, audio, language="auto")  # type: ignore[arg-type]
    with pytest.raises(TransientApiError, match="stopped before every clip"):
        runner.run(path)
    assert client.sent == 1
