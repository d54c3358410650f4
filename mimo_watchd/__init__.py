"""mimo-watchd: a drop-folder transcription daemon for the MiMo ASR API."""

__version__ = "0.1.0"
