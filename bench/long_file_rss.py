"""Benchmark: peak memory and time to prepare a 3-hour recording and encode all its chunks.

Generates a speech-like recording (streaming, with PyAV) into a temporary folder, then runs
``prepare`` + ``iter_chunks`` in a fresh child process and prints the child's peak RSS
(VmHWM), its RSS right after the imports, and the time of each pass. Run from the repository
root::

    python -m bench long-file-rss                          # 3 h, m4a source, mp3 chunks
    python -m bench long-file-rss --hours 1 --source flac --chunk-format wav
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import av
import numpy as np

from bench.audio_formats import speech_like, take

SOURCES = {  # name: (muxer, codec, sample rate, extension)
    "m4a": ("ipod", "aac", 44100, "m4a"),
    "flac": ("flac", "flac", 44100, "flac"),
    "mp3": ("mp3", "libmp3lame", 44100, "mp3"),
    "opus": ("ogg", "libopus", 48000, "opus"),
}

CHILD = textwrap.dedent("""
    import json, resource, sys, time

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    from mimo_watchd.audio import prepare
    from mimo_watchd.config import default_audio_settings
    after_imports = rss("VmRSS:")
    t0 = time.monotonic()
    prepared = prepare(sys.argv[1], audio=default_audio_settings(chunk_format=sys.argv[2]))
    t1 = time.monotonic()
    chunks = largest = 0
    for chunk in prepared.iter_chunks():
        chunks += 1
        largest = max(largest, chunk.b64_chars)
    t2 = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"after_imports_kb": after_imports, "peak_kb": rss("VmHWM:"),
                      "plan_s": t1 - t0, "encode_s": t2 - t1, "chunks": chunks,
                      "largest_b64": largest, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "duration_s": prepared.info.duration_seconds}))
""")


def generate(path: Path, seconds: float, source: str) -> None:
    """Writes ``seconds`` of speech-like audio to ``path``, one second at a time."""
    muxer, codec, rate, _ = SOURCES[source]
    signal, carry = speech_like(rate, seed=3), list[np.ndarray]()
    with av.open(str(path), "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        for i in range(int(seconds)):
            block = take(signal, rate, carry).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, i * rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    """Generates the file, measures the child, prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--source", choices=sorted(SOURCES), default="m4a")
    parser.add_argument("--chunk-format", choices=("mp3", "wav"), default="mp3")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"long.{SOURCES[args.source][3]}"
        started = time.monotonic()
        generate(path, args.hours * 3600, args.source)
        made = time.monotonic() - started
        env = {**os.environ, "PYTHONPATH": str(repo)}
        done = subprocess.run([sys.executable, "-c", CHILD, str(path), args.chunk_format],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(done.stderr)
        r = json.loads(done.stdout)
        size = path.stat().st_size
    print(f"source: {args.hours:g} h {args.source} ({SOURCES[args.source][1]}, "
          f"{SOURCES[args.source][2]} Hz mono), {size / 1e6:.1f} MB, generated in {made:.0f} s")
    print(f"chunks: {r['chunks']} x {args.chunk_format}, largest {r['largest_b64']:,} base64 "
          f"chars, audio {r['duration_s']:.1f} s")
    print(f"pass 1 (decode + level profile + plan): {r['plan_s']:.1f} s")
    print(f"pass 2 (decode + encode every chunk):   {r['encode_s']:.1f} s")
    print(f"CPU total: {r['cpu_s']:.1f} s ({r['duration_s'] / r['cpu_s']:.0f}x real time)")
    print(f"RSS after imports: {r['after_imports_kb'] / 1024:.1f} MB; "
          f"peak RSS (VmHWM): {r['peak_kb'] / 1024:.1f} MB")


if __name__ == "__main__":
    main()
