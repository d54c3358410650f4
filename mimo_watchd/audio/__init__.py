"""The audio layer: probing, transcoding and cutting recordings into API-sized chunks.

``probe(path) -> AudioInfo`` identifies a file by its bytes and checks that it is whole;
``prepare(path, audio=..., max_b64_chars=...) -> PreparedAudio`` plans its chunks and encodes
them lazily (``iter_chunks``), streaming, in bounded memory. PyAV is used only inside this
package; its exceptions leave it as ``AudioError`` / ``IncompleteAudioError``.
"""

from mimo_watchd.audio.decode import SAMPLE_RATE
from mimo_watchd.audio.encode import MIME, MP3_BITRATE
from mimo_watchd.audio.prepare import Chunk, PreparedAudio, Span, prepare
from mimo_watchd.audio.probe import AudioInfo, probe

__all__ = [
    "MIME",
    "MP3_BITRATE",
    "SAMPLE_RATE",
    "AudioInfo",
    "Chunk",
    "PreparedAudio",
    "Span",
    "prepare",
    "probe",
]
