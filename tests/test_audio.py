"""Tests of the audio layer on real files encoded with PyAV inside the tests."""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from mimo_watchd.audio import AudioInfo, AudioParams, Clip, ClipSpan, PreparedAudio, prepare, probe
from mimo_watchd.errors import AudioError, IncompleteAudioError

REPO = Path(__file__).resolve().parents[1]
RNG_SEED = 7

# name: (muxer, codec, sample rate, extension, sniffed format, codec as probed, encoder options)
FORMATS: dict[str, tuple[str, str, int, str, str, str, dict[str, object]]] = {
    "wav": ("wav", "pcm_s16le", 44100, "wav", "wav", "pcm_s16le", {}),
    "mp3": ("mp3", "libmp3lame", 44100, "mp3", "mp3", "mp3", {}),
    "m4a": ("ipod", "aac", 44100, "m4a", "m4a", "aac", {}),
    "mp4": ("mp4", "aac", 22050, "mp4", "mp4", "aac", {}),
    "adts": ("adts", "aac", 44100, "aac", "aac", "aac", {}),
    "opus": ("ogg", "libopus", 48000, "opus", "opus", "opus", {}),
    "flac": ("flac", "flac", 44100, "flac", "flac", "flac", {}),
    "amr": ("amr", "libopencore_amrnb", 8000, "amr", "amr", "amr_nb", {"bit_rate": 12200}),
    "webm": ("webm", "libopus", 48000, "webm", "webm", "opus", {}),
    "mka": ("matroska", "flac", 22050, "mka", "matroska", "flac", {}),
    "aiff": ("aiff", "pcm_s16be", 44100, "aiff", "aiff", "pcm_s16be", {}),
    "caf": ("caf", "pcm_s16le", 32000, "caf", "caf", "pcm_s16le", {}),
    "wma": ("asf", "wmav2", 44100, "wma", "asf", "wmav2", {"bit_rate": 64000}),
}


# ---------------------------------------------------------------- generating test audio


def synth(segments: Iterable[tuple[float, float | None]], rate: int) -> np.ndarray:
    """Float samples for (seconds, frequency or None for silence) segments; 10 ms fades."""
    parts = []
    for seconds, freq in segments:
        n = round(seconds * rate)
        if freq is None:
            parts.append(np.zeros(n, dtype=np.float32))
            continue
        t = np.arange(n) / rate
        ramp = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.01 * rate))
        parts.append((0.3 * np.sin(2 * np.pi * freq * t) * ramp).astype(np.float32))
    return np.concatenate(parts)


def noise(seconds: float, rate: int, seed: int = RNG_SEED) -> np.ndarray:
    """A tone over noise: never below -40 dBFS, so there is no pause anywhere."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(len(t))).astype(
        np.float32)


def write(path: Path, blocks: Iterable[np.ndarray] | np.ndarray, rate: int, muxer: str,
          codec: str, *, stereo: bool = False, bit_rate: int | None = None,
          muxer_options: dict[str, str] | None = None, sample_format: str | None = None) -> Path:
    """Encodes float mono blocks into ``path`` with PyAV, block by block."""
    if isinstance(blocks, np.ndarray):
        whole = blocks
        blocks = (whole[i : i + 8192] for i in range(0, len(whole), 8192))
    layout = "stereo" if stereo else "mono"
    with av.open(str(path), "w", format=muxer, options=muxer_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.audio.stream.AudioStream)
        if bit_rate:
            stream.bit_rate = bit_rate
        if sample_format:
            stream.format = sample_format
        pts = 0
        for block in blocks:
            data = np.tile(block.astype(np.float32), (2 if stereo else 1, 1))
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, pts
            pts += frame.samples
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make(tmp: Path, name: str, samples: np.ndarray | None = None, *, seconds: float = 3.0,
         **kw: object) -> Path:
    """A file in format ``name`` of FORMATS (a 3 s tone pattern unless samples are given)."""
    muxer, codec, rate, ext, _, _, opts = FORMATS[name]
    if samples is None:
        samples = synth([(0.5, 440.0), (0.25, None)] * round(seconds / 0.75), rate)
    args = {**opts, **kw}
    return write(tmp / f"{name}.{ext}", samples, rate, muxer, codec, **args)  # type: ignore[arg-type]


def decode(data: bytes | Path) -> tuple[np.ndarray, int, int, str]:
    """All samples (first channel, float) of encoded audio, with rate, channels and format."""
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(src, "r") as c:
        stream = c.streams.audio[0]
        frames = [f.to_ndarray() for f in c.decode(stream)]
        layout = stream.codec_context.channels
        fmt = c.format.name
    pcm = np.concatenate([f.reshape(layout, -1)[0] if f.ndim == 2 and f.shape[0] == layout
                          else f.reshape(-1, layout)[:, 0] for f in frames])
    if pcm.dtype == np.int16:
        pcm = pcm.astype(np.float32) / 32768
    return pcm, stream.codec_context.sample_rate, layout, fmt


def settings(**overrides: object) -> AudioParams:
    """Audio parameters with every default except ``overrides``."""
    return AudioParams(**overrides)  # type: ignore[arg-type]


def cut_bytes(path: Path, keep: int, name: str | None = None) -> Path:
    """A copy of ``path`` that stops after ``keep`` bytes (what a half-written file looks like)."""
    out = path.with_name(name or f"cut-{path.name}")
    out.write_bytes(path.read_bytes()[:keep])
    return out


def check_chunks(prepared: PreparedAudio, max_seconds: float, max_b64: int) -> list[Clip]:
    """Every clip within the limits, in order, covering the audio without gaps (nothing is
    skipped in these files)."""
    chunks = list(prepared.iter_clips())
    summary = prepared.summary
    assert [c.index for c in chunks] == list(range(summary.clips))
    assert chunks[0].start == 0.0
    assert chunks[-1].end == pytest.approx(summary.audio_seconds, abs=1e-6)
    for prev, chunk in itertools.pairwise(chunks):
        assert chunk.start == pytest.approx(prev.end - chunk.overlap_before, abs=1e-9)
    for chunk in chunks:
        assert len(chunk.pieces) == 1 and chunk.sent_seconds == chunk.end - chunk.start
        assert chunk.end - chunk.start <= max_seconds + 1e-9
        assert chunk.b64_chars <= max_b64
    assert summary.sent_seconds == pytest.approx(sum(c.sent_seconds for c in chunks))
    return chunks


# ---------------------------------------------------------------- probe


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_probe_identifies_format_codec_and_length(tmp_path: Path, name: str) -> None:
    """Each container is recognised from its bytes, with its codec, rate and length."""
    path = make(tmp_path, name)
    info = probe(path)
    _, _, rate, _, fmt, codec, _ = FORMATS[name]
    assert isinstance(info, AudioInfo)
    assert (info.format, info.codec, info.sample_rate, info.channels) == (fmt, codec, rate, 1)
    assert info.duration_seconds == pytest.approx(3.0, abs=0.1)
    assert info.size == path.stat().st_size and info.name == str(path)


def test_probe_sniffs_bytes_not_the_extension(tmp_path: Path) -> None:
    """An mp3 named .wav is an mp3."""
    path = make(tmp_path, "mp3").rename(tmp_path / "voicemail.wav")
    assert probe(path).format == "mp3"


def test_probe_reads_stereo_and_raw_gsm(tmp_path: Path) -> None:
    """Stereo files report two channels; a raw Asterisk .gsm file is recognised by its frames."""
    assert probe(make(tmp_path, "flac", stereo=True)).channels == 2
    rng = np.random.default_rng(RNG_SEED)
    frames = bytearray(rng.bytes(33 * 250))
    for i in range(0, len(frames), 33):
        frames[i] = 0xD0 | (frames[i] & 0x0F)
    gsm = tmp_path / "msg0001.gsm"
    gsm.write_bytes(bytes(frames))
    info = probe(gsm)
    assert (info.format, info.codec, info.sample_rate) == ("gsm", "gsm", 8000)
    assert info.duration_seconds == pytest.approx(5.0, abs=0.05)


def test_empty_file_is_refused_with_its_name(tmp_path: Path) -> None:
    """A 0-byte file is an AudioError that names the file."""
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)") as err:
        probe(path)
    assert not isinstance(err.value, IncompleteAudioError)


@pytest.mark.parametrize(("content", "looks_like"), [
    (b"hello, this is not audio\n" * 20, "text"),
    (b"%PDF-1.7\n" + bytes(600), "a PDF document"),
    (b"\x89PNG\r\n\x1a\n" + bytes(600), "a PNG image"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8, "an ID3 tag"),
    (bytes(range(256)) * 4, "unrecognised data"),
])
def test_not_audio_is_refused_saying_what_it_looks_like(
        tmp_path: Path, content: bytes, looks_like: str) -> None:
    """A non-audio file renamed .wav is an AudioError saying what it seems to be."""
    path = tmp_path / "renamed.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=rf"renamed\.wav: not an audio file \(looks like "
                       rf"{looks_like}"):
        probe(path)


def test_folder_and_silk_are_refused(tmp_path: Path) -> None:
    """A directory is not a regular file; SILK voice notes are named as unsupported."""
    with pytest.raises(AudioError, match="not a regular file"):
        probe(tmp_path)
    silk = tmp_path / "voice.amr"
    silk.write_bytes(b"\x02#!SILK_V3" + bytes(500))
    with pytest.raises(AudioError, match="SILK"):
        probe(silk)


def test_video_without_audio_has_no_audio_stream(tmp_path: Path) -> None:
    """An mp4 with only a video track is refused: no audio stream."""
    path = tmp_path / "video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioError, match=r"video\.mp4: contains no audio stream"):
        probe(path)


def test_undecodable_files_are_audio_errors_chained_to_pyav(tmp_path: Path) -> None:
    """Garbage behind a valid header is an AudioError chained to the PyAV error."""
    rng = np.random.default_rng(RNG_SEED)
    flac = tmp_path / "garbage.flac"
    flac.write_bytes(b"fLaC" + rng.bytes(20000))
    with pytest.raises(AudioError, match=r"garbage\.flac: cannot be read as flac") as err:
        probe(flac)
    assert isinstance(err.value.__cause__, av.error.FFmpegError)

    m4a = bytearray(make(tmp_path, "m4a").read_bytes())
    at = m4a.find(b"mdat")
    size = struct.unpack(">I", m4a[at - 4 : at])[0]
    m4a[at + 4 : at - 4 + size] = rng.bytes(size - 8)
    (tmp_path / "scrambled.m4a").write_bytes(bytes(m4a))
    with pytest.raises(AudioError, match=r"scrambled\.m4a: undecodable"):
        probe(tmp_path / "scrambled.m4a")

    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16000, 32000, 2, 16)
    data = rng.bytes(32000)
    riff = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
            + struct.pack("<I", len(data)) + data)
    (tmp_path / "codec.wav").write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(AudioError, match="no decoder"):
        probe(tmp_path / "codec.wav")


# ---------------------------------------------------------------- incomplete files


def test_m4a_without_moov_is_incomplete(tmp_path: Path) -> None:
    """An m4a cut before its moov box (a recorder still writing) is IncompleteAudioError."""
    path = make(tmp_path, "m4a")
    data = path.read_bytes()
    moov = data.find(b"moov") - 4
    assert moov > data.find(b"mdat")  # the muxer writes the index last, like a phone recorder
    with pytest.raises(IncompleteAudioError, match="no 'moov' box"):
        probe(cut_bytes(path, moov))
    with pytest.raises(IncompleteAudioError, match="'mdat' box runs past the end"):
        probe(cut_bytes(path, moov // 2))


def test_faststart_m4a_cut_in_its_data_is_incomplete(tmp_path: Path) -> None:
    """An m4a with its index in front but its audio cut short is IncompleteAudioError."""
    path = make(tmp_path, "m4a", muxer_options={"movflags": "+faststart"})
    assert path.read_bytes()[4:40].find(b"moov") != -1
    with pytest.raises(IncompleteAudioError, match="truncated"):
        probe(cut_bytes(path, path.stat().st_size * 2 // 3))


@pytest.mark.parametrize("name", ["mp3", "wav", "aiff", "caf", "flac", "opus", "webm", "mka",
                                  "adts", "m4a"])
def test_truncated_files_are_incomplete(tmp_path: Path, name: str) -> None:
    """A file cut at 60% is IncompleteAudioError, naming the file."""
    path = make(tmp_path, name, seconds=6.0)
    short = cut_bytes(path, path.stat().st_size * 6 // 10, f"half.{path.suffix}")
    with pytest.raises(IncompleteAudioError, match=rf"half\.{path.suffix}: truncated"):
        probe(short)


def test_mp3_without_xing_header(tmp_path: Path) -> None:
    """An mp3 with no Xing/Info header is measured by its frames; cut mid-frame it is
    incomplete."""
    path = make(tmp_path, "mp3", muxer_options={"write_xing": "0"})
    assert b"Xing" not in path.read_bytes()[:2000] and b"Info" not in path.read_bytes()[:2000]
    assert probe(path).duration_seconds == pytest.approx(3.0, abs=0.1)
    with pytest.raises(IncompleteAudioError, match="inside an MPEG audio frame"):
        probe(cut_bytes(path, path.stat().st_size // 2 + 101))


def test_wav_placeholder_sizes(tmp_path: Path) -> None:
    """A wav whose header still says 0 bytes is incomplete; a streamed one (-1 sizes) is fine."""
    data = bytearray(make(tmp_path, "wav").read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0)
    data[4:8] = struct.pack("<I", 0)
    (tmp_path / "writing.wav").write_bytes(bytes(data))
    with pytest.raises(IncompleteAudioError, match="not finalised"):
        probe(tmp_path / "writing.wav")
    data[at + 4 : at + 8] = data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "piped.wav").write_bytes(bytes(data))
    assert probe(tmp_path / "piped.wav").duration_seconds == pytest.approx(3.0, abs=0.01)


def test_long_files_probe_cheaply_but_catch_truncation(tmp_path: Path) -> None:
    """Past FULL_DECODE_SECONDS probe reads headers and the tail, and still sees a cut file."""
    from mimo_watchd.audio.probe import FULL_DECODE_SECONDS

    seconds = FULL_DECODE_SECONDS + 100
    path = write(tmp_path / "long.flac", synth([(4.0, 500.0), (6.0, None)] * round(seconds / 10),
                                                16000), 16000, "flac", "flac")
    assert probe(path).duration_seconds == pytest.approx(seconds, abs=0.01)
    # Cut at 90%: the header still declares the full length, only the tail check sees it.
    with pytest.raises(IncompleteAudioError, match=r"declares 400\.0 s"):
        probe(cut_bytes(path, path.stat().st_size * 9 // 10))


# ---------------------------------------------------------------- prepare: passthrough


@pytest.mark.parametrize(("name", "mime"), [("wav", "audio/wav"), ("mp3", "audio/mpeg")])
def test_small_wav_and_mp3_are_sent_as_they_are(tmp_path: Path, name: str, mime: str) -> None:
    """A wav or mp3 that fits one request is one chunk holding the original bytes."""
    path = make(tmp_path, name)
    prepared = prepare(path, settings())
    chunks = list(prepared.iter_clips())
    assert prepared.passthrough and prepared.mime == mime
    assert len(chunks) == 1 and chunks[0].data == path.read_bytes() and chunks[0].mime == mime
    assert (chunks[0].start, chunks[0].overlap_before) == (0.0, 0.0)
    assert chunks[0].end == pytest.approx(3.0, abs=0.1)


def test_wav_that_does_not_fit_is_transcoded(tmp_path: Path) -> None:
    """A wav too large, too long or not 16-bit PCM is transcoded instead of passed through."""
    path = make(tmp_path, "wav", seconds=9.0)
    big = prepare(path, settings(max_b64_chars=path.stat().st_size))
    long = prepare(path, settings(max_clip_seconds=5.0))
    u8 = write(tmp_path / "u8.wav", synth([(2.0, 440.0)], 8000), 8000, "wav", "pcm_u8")
    assert probe(u8).codec == "pcm_u8"
    for prepared in (big, long, prepare(u8, settings())):
        assert not prepared.passthrough and prepared.mime == "audio/mpeg"
    assert len(list(long.iter_clips())) == 2


# ---------------------------------------------------------------- prepare: transcoding


@pytest.mark.parametrize("name", sorted(set(FORMATS) - {"wav", "mp3"}))
def test_other_formats_become_mono_mp3_at_their_rate_up_to_24k(tmp_path: Path, name: str) -> None:
    """Every other format is transcoded to a real mono mp3 of the same length, at the source's
    rate up to 24 kHz (never upsampled)."""
    prepared = prepare(make(tmp_path, name, stereo=name not in ("amr",)), settings())
    (chunk,) = list(prepared.iter_clips())
    out = tmp_path / "chunk.bin"
    out.write_bytes(chunk.data)
    info = probe(out)
    rate = min(FORMATS[name][2], 24000)
    assert (info.format, info.codec, info.sample_rate, info.channels) == ("mp3", "mp3", rate, 1)
    assert chunk.mime == "audio/mpeg" and not prepared.passthrough and prepared.rate == rate
    assert info.duration_seconds == pytest.approx(prepared.info.duration_seconds, abs=0.05)


def test_wav_clip_format_gives_mono_pcm_and_max_rate_caps_it(tmp_path: Path) -> None:
    """With clip_format wav, clips are real mono 16-bit wav files at 24 kHz from a 48 kHz
    source, or at max_sample_rate when that is lower (the old 16 kHz behaviour)."""
    for max_rate, rate in ((24000, 24000), (16000, 16000)):
        prepared = prepare(make(tmp_path, "opus"),
                           settings(clip_format="wav", max_sample_rate=max_rate))
        (chunk,) = list(prepared.iter_clips())
        out = tmp_path / "chunk.bin"
        out.write_bytes(chunk.data)
        info = probe(out)
        assert (info.format, info.codec, info.sample_rate, info.channels) == (
            "wav", "pcm_s16le", rate, 1)
        assert chunk.mime == "audio/wav" and chunk.data[:4] == b"RIFF"


def pauses_and_tones(rate: int, seconds: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Tones of 0.5-3 s separated by pauses of 0.3-0.9 s; returns samples and the pauses."""
    rng = np.random.default_rng(RNG_SEED)
    segments: list[tuple[float, float | None]] = []
    pauses, t = [], 0.0
    while t < seconds:
        tone, pause = float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.3, 0.9))
        segments += [(tone, float(rng.uniform(200, 2000))), (pause, None)]
        pauses.append((t + tone, t + tone + pause))
        t += tone + pause
    return synth(segments, rate), pauses


@pytest.mark.parametrize("name", ["flac", "m4a"])
def test_cuts_fall_inside_pauses(tmp_path: Path, name: str) -> None:
    """When pauses exist, every cut lies inside one, and chunks do not overlap."""
    rate = FORMATS[name][2]
    samples, pauses = pauses_and_tones(rate, 150.0)
    prepared = prepare(make(tmp_path, name, samples), settings(max_clip_seconds=20.0))
    chunks = check_chunks(prepared, 20.0, 9_500_000)
    assert len(chunks) >= 8
    for chunk in chunks[:-1]:
        assert any(a + 0.02 <= chunk.end <= b - 0.02 for a, b in pauses), chunk.end
    assert all(c.overlap_before == 0.0 for c in chunks)


def test_without_pauses_chunks_overlap(tmp_path: Path) -> None:
    """Audio without a pause is cut at the target with overlap_seconds of overlap."""
    path = write(tmp_path / "noise.flac", noise(70.0, 16000), 16000, "flac", "flac")
    prepared = prepare(path, settings(max_clip_seconds=20.0, overlap_seconds=1.5))
    chunks = check_chunks(prepared, 20.0, 9_500_000)
    assert [round(c.start, 3) for c in chunks] == [0.0, 18.5, 37.0, 55.5]
    assert [c.overlap_before for c in chunks] == [0.0, 1.5, 1.5, 1.5]


def test_size_limit_shortens_wav_chunks(tmp_path: Path) -> None:
    """Chunks stay under max_b64_chars: wav chunks become as long as the size allows."""
    samples, _ = pauses_and_tones(16000, 40.0)
    path = write(tmp_path / "speech.flac", samples, 16000, "flac", "flac")
    prepared = prepare(path, settings(clip_format="wav", max_b64_chars=300_000))
    chunks = check_chunks(prepared, 300.0, 300_000)
    assert len(chunks) >= 6
    assert max(c.b64_chars for c in chunks) > 200_000
    for chunk in chunks:
        pcm, rate, channels, fmt = decode(chunk.data)
        assert (rate, channels, fmt) == (16000, 1, "wav")
        assert len(pcm) == round(chunk.end * 16000) - round(chunk.start * 16000)


@pytest.mark.parametrize(("fmt", "limit", "at_least"), [("mp3", 20_000, 8),
                                                       ("wav", 100_000, 9)])
def test_tiny_request_limit_still_fits_every_chunk(
        tmp_path: Path, fmt: str, limit: int, at_least: int) -> None:
    """Even a request limit of a few thousand bytes is met by every chunk; below a second
    of audio per chunk the limit is refused as a configuration error."""
    samples, _ = pauses_and_tones(16000, 20.0)
    path = write(tmp_path / "speech.flac", samples, 16000, "flac", "flac")
    prepared = prepare(path, settings(clip_format=fmt, max_b64_chars=limit))
    assert len(check_chunks(prepared, 300.0, limit)) >= at_least
    with pytest.raises(ValueError, match="under one second"):
        prepare(path, settings(clip_format=fmt, max_b64_chars=limit // 5))


def test_chunks_reassemble_into_the_exact_source(tmp_path: Path) -> None:
    """Decoded wav clips, minus their overlaps, are exactly the 16 kHz source samples; with
    silence skipped, each clip is exactly its pieces of the source, end to end."""
    source = np.concatenate([noise(30.0, 16000), synth([(10.0, None), (15.0, 700.0)], 16000)])
    path = write(tmp_path / "src.flac", source, 16000, "flac", "flac", sample_format="s16")
    reference = decode(path)[0]
    prepared = prepare(path, settings(clip_format="wav", max_clip_seconds=12.0,
                                      skip_silence=False))
    chunks = check_chunks(prepared, 12.0, 9_500_000)
    assert any(c.overlap_before for c in chunks) and any(not c.overlap_before for c in chunks[1:])
    pieces = [decode(c.data)[0][round(c.overlap_before * 16000):] for c in chunks]
    assert np.array_equal(np.concatenate(pieces), reference)
    clips = list(prepare(path, settings(clip_format="wav")).iter_clips())
    assert [len(c.pieces) for c in clips] == [2]  # the 10 s silence is left out, but 2 x 0.3 s
    assert clips[0].sent_seconds == pytest.approx(45.6, abs=0.02)
    expected = np.concatenate([reference[round(a * 16000) : round(b * 16000)]
                               for a, b in clips[0].pieces])
    assert np.array_equal(decode(clips[0].data)[0], expected)


def test_rate_and_channel_changes_midway_are_followed(tmp_path: Path) -> None:
    """Two mp3 files glued together (44.1 kHz mono, then 22.05 kHz stereo) decode in full."""
    first = write(tmp_path / "a.mp3", synth([(4.0, 440.0)], 44100), 44100, "mp3", "libmp3lame")
    second = write(tmp_path / "b.mp3", synth([(4.0, 660.0)], 22050), 22050, "mp3", "libmp3lame",
                   stereo=True)
    glued = tmp_path / "glued.mp3"
    glued.write_bytes(first.read_bytes() + second.read_bytes())
    prepared = prepare(glued, settings(max_clip_seconds=5.0, clip_format="wav"))
    chunks = check_chunks(prepared, 5.0, 9_500_000)
    assert prepared.summary.audio_seconds == pytest.approx(8.0, abs=0.15)
    assert prepared.rate == 24000
    assert sum(len(decode(c.data)[0]) for c in chunks) == sum(
        round(c.end * 24000) - round(c.start * 24000) for c in chunks)


def test_iter_clips_is_lazy_repeatable_and_closable(tmp_path: Path) -> None:
    """Clips are produced one at a time, the same on every pass; abandoning a pass is clean."""
    path = write(tmp_path / "noise.flac", noise(50.0, 16000), 16000, "flac", "flac")
    prepared = prepare(path, settings(max_clip_seconds=10.0, skip_silence=False))
    gen = prepared.iter_clips()
    first = next(gen)
    gen.close()
    with pytest.raises(RuntimeError, match="not run to the end"):
        prepared.summary  # noqa: B018
    assert next(prepared.iter_clips()).data == first.data
    assert len(list(prepared.iter_clips())) == prepared.summary.clips == 6


def test_encode_span_matches_the_same_range_of_a_full_decode(tmp_path: Path) -> None:
    """encode seeks and returns exactly the samples of a span's pieces."""
    source = noise(60.0, 16000)
    path = write(tmp_path / "src.flac", source, 16000, "flac", "flac", sample_format="s16")
    prepared = prepare(path, settings(clip_format="wav", max_clip_seconds=20.0))
    reference = decode(path)[0]
    for pieces in [((0.0, 3.0),), ((12.345, 17.5),), ((41.0, 60.0),), ((5.0, 6.0), (9.5, 12.0))]:
        data = prepared.encode(ClipSpan(0, pieces, 0.0, -60.0))
        assert data[:4] == b"RIFF" and prepared.clip_mime == "audio/wav"
        pcm = decode(data)[0]
        assert np.array_equal(pcm, np.concatenate(
            [reference[round(a * 16000) : round(b * 16000)] for a, b in pieces]))


def best_lag(a: np.ndarray, b: np.ndarray, reach: int = 40) -> int:
    """The shift of ``b`` (in samples) that lines it up best with ``a``."""
    core = a[reach:-reach]
    return max(range(-reach, reach + 1),
               key=lambda lag: float(np.dot(core, b[reach + lag : reach + lag + len(core)])))


@pytest.mark.parametrize(("name", "slack"), [("mp3", 0), ("m4a", 0), ("opus", 0), ("amr", 0),
                                             ("webm", 16)])
def test_encode_span_is_aligned_for_lossy_sources(tmp_path: Path, name: str, slack: int) -> None:
    """After a seek in a lossy file the range lines up with the streamed clips (Matroska
    timestamps are in milliseconds: 16 samples at 16 kHz, 24 at 24 kHz)."""
    path = make(tmp_path, name, noise(40.0, FORMATS[name][2]))
    prepared = prepare(path, settings(clip_format="wav", max_clip_seconds=20.0,
                                      skip_silence=False))
    rate = prepared.rate
    streamed = decode(next(prepared.iter_clips()).data)[0]
    for start in (0.3, 7.0, 13.33):
        span = decode(prepared.encode(ClipSpan(0, ((start, start + 5.0),), 0.0, -60.0)))[0]
        assert len(span) == 5 * rate
        assert abs(best_lag(span, streamed[round(start * rate) :])) <= slack * rate // 16000


def test_encode_span_of_a_passthrough_file_is_transcoded(tmp_path: Path) -> None:
    """Re-splitting a file that was sent as is gives clip_format audio of that range."""
    prepared = prepare(make(tmp_path, "wav", seconds=6.0), settings())
    assert prepared.passthrough
    data = prepared.encode(ClipSpan(0, ((1.0, 4.0),), 0.0, -60.0))
    assert prepared.clip_mime == "audio/mpeg"
    pcm, rate, channels, fmt = decode(data)
    assert (rate, channels, fmt) == (24000, 1, "mp3")
    assert len(pcm) / 24000 == pytest.approx(3.0, abs=0.01)


def test_split_span_cuts_in_a_pause_or_overlaps(tmp_path: Path) -> None:
    """A clip is halved in a pause of its middle third, else at the middle with overlap; a
    clip with a silence left out inside is halved there."""
    tones = synth([(4.0, 440.0), (0.6, None), (5.4, 660.0)], 16000)
    prepared = prepare(write(tmp_path / "t.flac", tones, 16000, "flac", "flac"), settings())
    (clip,) = list(prepared.iter_clips())
    first, second = prepared.split(clip)
    assert 4.0 < first.end == second.start < 4.6 and second.overlap_before == 0.0
    prepared = prepare(write(tmp_path / "n.flac", noise(30.0, 16000), 16000, "flac", "flac"),
                       settings(overlap_seconds=2.0))
    first, second = prepared.split(ClipSpan(3, ((10.0, 30.0),), 0.0, -40.0))
    assert (first.start, first.end, second.start, second.end) == (10.0, 20.0, 18.0, 30.0)
    assert second.overlap_before == 2.0 and (first.index, second.index) == (0, 1)
    gapped = synth([(6.0, 440.0), (8.0, None), (3.0, 660.0)], 16000)
    prepared = prepare(write(tmp_path / "g.flac", gapped, 16000, "flac", "flac"), settings())
    (clip,) = list(prepared.iter_clips())
    assert len(clip.pieces) == 2
    assert [x for p in clip.pieces for x in p] == pytest.approx([0.0, 6.3, 13.7, 17.0], abs=0.02)
    first, second = prepared.split(clip)
    assert (first.pieces, second.pieces) == ((clip.pieces[0],), (clip.pieces[1],))


def test_prepare_reports_incomplete_and_undecodable_files(tmp_path: Path) -> None:
    """prepare raises what probe raises: IncompleteAudioError and AudioError."""
    path = make(tmp_path, "m4a")
    with pytest.raises(IncompleteAudioError):
        prepare(cut_bytes(path, 2000), settings())
    (tmp_path / "notes.mp3").write_text("not audio at all\n")
    with pytest.raises(AudioError, match=r"notes\.mp3"):
        prepare(tmp_path / "notes.mp3", settings())


# ---------------------------------------------------------------- bounded memory


def speech_like(seconds: float, rate: int, seed: int = RNG_SEED) -> Iterator[np.ndarray]:
    """One-second blocks of tone bursts, pauses and faint noise, generated lazily."""
    rng = np.random.default_rng(seed)
    t = np.arange(rate) / rate
    for i in range(int(seconds)):
        burst = (rng.uniform(0.2, 0.9), rng.uniform(150, 1500))
        gate = (t < burst[0]) if i % 7 else np.zeros(rate, dtype=bool)
        yield (0.3 * np.sin(2 * np.pi * burst[1] * t) * gate
               + 0.002 * rng.standard_normal(rate)).astype(np.float32)


CHILD = textwrap.dedent("""
    import json, sys
    from mimo_watchd.audio import AudioParams, prepare

    prepared = prepare(sys.argv[1], AudioParams(clip_format=sys.argv[2], skip_silence=False))
    count, seconds, largest = 0, 0.0, 0
    for chunk in prepared.iter_clips():
        count, seconds = count + 1, seconds + chunk.sent_seconds - chunk.overlap_before
        largest = max(largest, chunk.b64_chars)
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(json.dumps({"chunks": count, "seconds": seconds, "largest_b64": largest,
                      "clips": prepared.summary.clips, "peak_kb": int(status)}))
""")


@pytest.mark.slow
def test_long_recording_is_prepared_in_bounded_memory(tmp_path: Path) -> None:
    """A 75-minute recording is prepared and chunked with a peak RSS under 200 MB."""
    minutes = 75
    path = write(tmp_path / "meeting.flac", speech_like(minutes * 60, 22050), 22050, "flac",
                 "flac")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), "wav"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["chunks"] == result["clips"] >= minutes
    assert result["seconds"] == pytest.approx(minutes * 60, abs=0.1)
    assert result["largest_b64"] <= 9_500_000
    assert result["peak_kb"] < 200 * 1024, result
