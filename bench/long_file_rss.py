"""Benchmark: time to the first clip, total time and peak memory of preparing long recordings,
streaming clips (this code) next to the old behaviour (300 s chunks, two passes) in one run.

Generates speech-like recordings (streaming, with PyAV) into a temporary folder, then, in fresh
child processes, runs ``prepare`` + ``iter_clips`` and reports each child's time to its first
clip (probe included), total time, clips, audio sent and peak RSS (VmHWM). The old behaviour is
the code of ``BASELINE`` (the commit before the streaming audio layer), exported with
``git archive`` and run the same way. Cases: a 20-minute recording alone; the same prepared by
``--concurrent`` children at once (several long files arriving together on a 2-core machine);
a ``--hours`` recording alone. Targets: first clip within 5 s in both 20-minute cases, peak RSS
under 200 MB for the long one. Run from the repository root::

    python -m bench long-file-rss                       # 20 min x1, x4; 3 h; m4a sources
    python -m bench long-file-rss --hours 1 --source flac --clip-format wav
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import av
import numpy as np

from bench.audio_formats import speech_like, take

BASELINE = "6a1b71e"  # the last commit with two-pass, 300 s, 16 kHz chunks
FIRST_CLIP_TARGET_S = 5.0
RSS_TARGET_MB = 200.0
SOURCES = {  # name: (muxer, codec, sample rate, extension)
    "m4a": ("ipod", "aac", 44100, "m4a"),
    "flac": ("flac", "flac", 44100, "flac"),
    "mp3": ("mp3", "libmp3lame", 44100, "mp3"),
    "opus": ("ogg", "libopus", 48000, "opus"),
}

_MEASURE = """
    import json, resource, sys, time

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    {imports}
    after_imports = rss("VmRSS:")
    t0 = time.monotonic()
    {prepare}
    first = None
    clips = largest = 0
    sent = 0.0
    for clip in {iterate}:
        first = first if first is not None else time.monotonic() - t0
        clips += 1
        largest = max(largest, clip.b64_chars)
        sent += {seconds}
    total = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{"after_imports_kb": after_imports, "peak_kb": rss("VmHWM:"),
                      "first_s": first, "total_s": total, "clips": clips, "sent_s": sent,
                      "largest_b64": largest, "cpu_s": usage.ru_utime + usage.ru_stime}}))
"""
NEW_CHILD = textwrap.dedent(_MEASURE.format(
    imports="from mimo_watchd.audio import AudioParams, prepare",
    prepare="prepared = prepare(sys.argv[1], AudioParams(clip_format=sys.argv[2]))",
    iterate="prepared.iter_clips()", seconds="clip.sent_seconds"))
OLD_CHILD = textwrap.dedent(_MEASURE.format(
    imports="from mimo_watchd.audio import prepare\n    "
            "from mimo_watchd.config import default_audio_settings",
    prepare="prepared = prepare(sys.argv[1], "
            "audio=default_audio_settings(chunk_format=sys.argv[2]))",
    iterate="prepared.iter_chunks()", seconds="clip.duration"))


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


def baseline_tree(repo: Path, into: Path) -> Path:
    """The package as of ``BASELINE``, exported into ``into`` (for PYTHONPATH)."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", BASELINE, "mimo_watchd"],
                             capture_output=True, check=True).stdout
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(code_root: Path, child: str, paths: list[Path], fmt: str) -> list[dict[str, float]]:
    """Runs one child per path, all at once; returns their figures."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    procs = [subprocess.Popen([sys.executable, "-c", child, str(p), fmt], env=env,
                              cwd=code_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for p in paths]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(err)
        results.append(json.loads(out))
    return results


def row(case: str, code: str, runs: list[dict[str, float]]) -> str:
    """One table row: the worst first-clip time, mean total time, clips, peak RSS."""
    first = max(r["first_s"] for r in runs)
    total = sum(r["total_s"] for r in runs) / len(runs)
    peak = max(r["peak_kb"] for r in runs) / 1024
    r = runs[0]
    return " | ".join([case, code, f"{first:.2f}", f"{total:.1f}", f"{r['cpu_s']:.1f}",
                       f"{r['clips']}", f"{r['sent_s']:.0f}", f"{r['largest_b64']:,}",
                       f"{peak:.0f}"])


def main() -> None:
    """Generates the recordings, measures both codes, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--source", choices=sorted(SOURCES), default="m4a")
    parser.add_argument("--clip-format", choices=("mp3", "wav"), default="mp3")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    ext = SOURCES[args.source][3]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        old_root = baseline_tree(repo, root / "baseline")
        started = time.monotonic()
        medium = root / f"medium.{ext}"
        generate(medium, args.minutes * 60, args.source)
        copies = [medium]
        for i in range(1, args.concurrent):
            copies.append(root / f"medium-{i}.{ext}")
            shutil.copyfile(medium, copies[-1])
        long = root / f"long.{ext}"
        generate(long, args.hours * 3600, args.source)
        made = time.monotonic() - started
        cases = [(f"{args.minutes:g} min alone", [medium]),
                 (f"{args.minutes:g} min x{args.concurrent} at once", copies),
                 (f"{args.hours:g} h alone", [long])]
        rows, news = [], []
        for case, paths in cases:
            new = measure(repo, NEW_CHILD, paths, args.clip_format)
            old = measure(old_root, OLD_CHILD, paths, args.clip_format)
            rows += [row(case, "streaming clips", new), row(case, f"old ({BASELINE})", old)]
            news.append(new)
    print(f"sources: {args.source} ({SOURCES[args.source][1]}, {SOURCES[args.source][2]} Hz "
          f"mono, speech-like), generated in {made:.0f} s; clips as {args.clip_format}; "
          f"{os.cpu_count()} CPUs; PyAV {av.__version__}")
    header = ("case", "code", "first clip s (worst)", "total s (mean)", "CPU s (one child)",
              "clips", "audio sent s", "largest b64", "peak RSS MB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    print("\n".join(rows))
    worst_first = max(r["first_s"] for r in news[0] + news[1])
    long_peak = max(r["peak_kb"] for r in news[2]) / 1024
    print(f"targets: first clip <= {FIRST_CLIP_TARGET_S:g} s: "
          f"{'met' if worst_first <= FIRST_CLIP_TARGET_S else 'MISSED'} ({worst_first:.2f} s); "
          f"peak RSS < {RSS_TARGET_MB:g} MB: "
          f"{'met' if long_peak < RSS_TARGET_MB else 'MISSED'} ({long_peak:.0f} MB)")


if __name__ == "__main__":
    main()
