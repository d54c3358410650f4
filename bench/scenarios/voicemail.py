"""Voicemail: what silence costs. Messages with long pauses and hang-ups without speech, on
several phone-line noise floors, billed through the daemon, sent whole (naive), and the floor.

The corpus (deterministic): for each noise floor, messages of 2-4 stretches of tone words
separated by 2.5-12 s of line noise, with 2-6 s before the first word and 3-20 s after the
last, and hang-ups of 3-25 s of line noise ending in a click; half 8 kHz wav (a phone
system's), half 16 kHz mp3. Each client gets a fresh emulator (no latency, no limits), and
billed seconds are what it reports (``usage.seconds`` of every answered request). The floor is
the speech itself: the seconds from each stretch's first word to its last. Targets: billed
within 10 % of the speech plus a second of rounding per clip, every word transcribed in
order, no request for a file without speech.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Deployment, EmulatorProc, link_tree, scratch
from bench.report import Section, Table, fmt, ratio
from bench.scenarios.common import Run, run_daemon_batch, run_naive_batch
from mimo_watchd.emulator import tones

NAME = "voicemail"
RATE = 16000
FLOORS = {  # name: (white noise dBFS or None, 50 Hz hum dBFS or None)
    "digital silence": (None, None),
    "hiss -60 dBFS": (-60.0, None),
    "hiss -45 dBFS": (-45.0, None),
    "hum -40 + hiss -55": (-55.0, -40.0),
}
BILLED_MARGIN = 0.10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=8, help="messages per noise floor")
    p.add_argument("--hangups", type=int, default=4, help="hang-ups per noise floor")


@dataclass(frozen=True)
class Voicemail:
    """One generated file: its name, noise floor, words and seconds of speech."""

    name: str
    floor: str
    words: tuple[str, ...]
    speech_seconds: float
    seconds: float


def _line(n: int, floor: tuple[float | None, float | None], rng: np.random.Generator,
          ) -> np.ndarray:
    """``n`` samples of a phone line's noise (float, full scale 32767)."""
    hiss, hum = floor
    out = np.zeros(n)
    if hiss is not None:
        out += rng.normal(0, 10 ** (hiss / 20) * 32767, n)
    if hum is not None:
        out += np.sin(2 * np.pi * 50 * np.arange(n) / RATE) * 10 ** (hum / 20) * 32767 * 1.41
    return out


def _words(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        word = rng.choice(tones.WORDS)
        if not out or out[-1] != word:
            out.append(word)
    return out


def generate(folder: Path, messages: int, hangups: int) -> list[Voicemail]:
    """Writes the corpus into ``folder``; what each file holds."""
    folder.mkdir(parents=True)
    corpus = []
    for f, (floor_name, floor) in enumerate(FLOORS.items()):
        for i in range(messages + hangups):
            seed = 1000 * f + i
            rng, nrng = random.Random(seed), np.random.default_rng(seed)
            parts: list[np.ndarray] = []
            words: list[str] = []
            speech = 0.0
            if i < messages:
                parts.append(np.zeros(round(rng.uniform(2, 6) * RATE)))
                for k in range(rng.randint(2, 4)):
                    if k:
                        parts.append(np.zeros(round(rng.uniform(2.5, 12) * RATE)))
                    said = _words(rng, rng.randint(6, 40))
                    talk = tones.synthesize(said, lead_seconds=0.0).astype(np.float64)
                    parts.append(talk)
                    words += said
                    speech += len(talk) / RATE
                parts.append(np.zeros(round(rng.uniform(3, 20) * RATE)))
            else:
                parts.append(np.zeros(round(rng.uniform(3, 25) * RATE)))
            click = np.zeros(round(0.3 * RATE))
            click[:40] = 12000.0  # 2.5 ms: the receiver put down
            samples = np.concatenate([*parts, click])
            samples = np.clip(samples + _line(len(samples), floor, nrng), -32768, 32767)
            pcm = samples.astype(np.int16)
            kind = "msg" if i < messages else "hangup"
            if i % 2:
                name = f"f{f}-{kind}{i:02d}.mp3"
                tones.write_samples(folder / name, pcm, RATE, "mp3")
            else:
                name = f"f{f}-{kind}{i:02d}.wav"
                tones.write_samples(folder / name, pcm[::2], RATE // 2, "wav")  # 8 kHz
            corpus.append(Voicemail(name, floor_name, tuple(words), speech, len(pcm) / RATE))
    return corpus


@dataclass(frozen=True)
class Outcome:
    """What one client made of the corpus."""

    run: Run
    billed: int
    requests: int
    no_speech_requests: int  # requests made for files without speech
    lost: int  # spoken words missing from the transcripts
    extra: int  # words in the transcripts that were not spoken
    sent: float | None  # seconds of audio sent (the daemon's sidecars say)
    clips: int | None
    per_floor: dict[str, int]  # billed seconds per noise floor


def _billed(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["status"] == 200 and c.get("usage")]


def _diff(said: tuple[str, ...], text: str) -> tuple[int, int]:
    got = [w.strip(".,") for w in text.split()]
    m = difflib.SequenceMatcher(a=said, b=got, autojunk=False)
    same = sum(block.size for block in m.get_matching_blocks())
    return len(said) - same, len(got) - same


def _daemon(root: Path, source: Path, corpus: list[Voicemail], **audio: Any) -> Outcome:
    by_name = {v.name: v for v in corpus}
    with EmulatorProc() as emu:
        dep = Deployment(root)
        settings: dict[str, Any] = {"audio": audio} if audio else {}
        dep.write_config(emu.url, **settings)
        staged = root / "staged"
        link_tree(source, staged)
        run = run_daemon_batch(emu, dep, staged, len(corpus), timeout=1800)
        calls = _billed(emu.calls())
    lost = extra = no_speech = clips = 0
    sent = 0.0
    per_floor = dict.fromkeys(FLOORS, 0)
    for path in sorted(dep.processed.rglob("*.json")):
        doc = json.loads(path.read_text())
        v = by_name[Path(doc["source"]["original_path"]).name]
        miss, more = _diff(v.words, doc["transcript"])
        lost, extra = lost + miss, extra + more
        if not v.words:
            no_speech += len(doc["chunks"])
        clips += len(doc["chunks"])
        sent += doc["sent_seconds"]
        per_floor[v.floor] += doc["usage"]["seconds"]
    return Outcome(run, sum(c["usage"]["seconds"] for c in calls), len(calls), no_speech, lost,
                   extra, sent, clips, per_floor)


def _naive(root: Path, source: Path, corpus: list[Voicemail]) -> Outcome:
    with EmulatorProc() as emu:
        dep = Deployment(root)
        staged = root / "staged"
        link_tree(source, staged)
        run = run_naive_batch(emu, dep, staged, len(corpus), timeout=1800)
        calls = _billed(emu.calls())
    lost = extra = 0
    for v in corpus:
        txt = (dep.processed / v.name).with_suffix(".txt")
        miss, more = _diff(v.words, txt.read_text() if txt.exists() else "")
        lost, extra = lost + miss, extra + more
    # Naive sends each file's bytes as they are: its requests are known by their hash.
    by_hash = {hashlib.sha256((source / v.name).read_bytes()).hexdigest(): v for v in corpus}
    per_floor = dict.fromkeys(FLOORS, 0)
    no_speech = 0
    for c in calls:
        v = by_hash[c["audio_sha256"]]
        per_floor[v.floor] += c["usage"]["seconds"]
        no_speech += not v.words
    return Outcome(run, sum(c["usage"]["seconds"] for c in calls), len(calls), no_speech, lost,
                   extra, None, None, per_floor)


def run(args: argparse.Namespace) -> Section:
    with scratch(args.scratch, NAME) as root:
        corpus = generate(root / "corpus", args.messages, args.hangups)
        daemon = _daemon(root / "daemon", root / "corpus", corpus)
        everything = _daemon(root / "all", root / "corpus", corpus, skip_silence=False)
        naive = _naive(root / "naive", root / "corpus", corpus)
    speech = sum(v.speech_seconds for v in corpus)
    total = sum(v.seconds for v in corpus)
    hangups = sum(1 for v in corpus if not v.words)
    words = sum(len(v.words) for v in corpus)
    clients = (daemon, everything, naive)
    t = Table(["metric", "daemon", "daemon, skip_silence: false", "naive (whole files)",
               "floor (speech)"])
    t.add("billed seconds", *(o.billed for o in clients), round(speech))
    t.add("billed ÷ speech", *(ratio(o.billed, speech) for o in clients), "1.00")
    t.add("seconds sent", daemon.sent, everything.sent, total, speech)
    t.add("requests", *(o.requests for o in clients), "-")
    t.add(f"requests for the {hangups} files without speech",
          *(o.no_speech_requests for o in clients), 0)
    t.add(f"words lost / extra (of {words:,})", *(f"{o.lost} / {o.extra}" for o in clients), "-")
    t.add("wall s", *(o.run.wall for o in clients), "-")
    t.add("client CPU s", *(o.run.cpu for o in clients), "-")
    per = Table(["noise floor", "files (hang-ups)", "audio s", "speech s", "daemon billed s",
                 "naive billed s"])
    for floor in FLOORS:
        files = [v for v in corpus if v.floor == floor]
        per.add(floor, f"{len(files)} ({sum(1 for v in files if not v.words)})",
                sum(v.seconds for v in files), sum(v.speech_seconds for v in files),
                daemon.per_floor[floor], naive.per_floor[floor])
    clips = daemon.clips or 0
    limit = (1 + BILLED_MARGIN) * speech + clips
    ok_billed = daemon.billed <= limit
    ok_words = daemon.lost == 0 and daemon.extra == 0
    ok_calls = daemon.no_speech_requests == 0
    verdicts = [
        f"target billed <= {1 + BILLED_MARGIN:.2f} x speech + 1 s per clip ({fmt(speech)} s, "
        f"{clips} clips: {fmt(limit)} s): {daemon.billed:,} s - "
        f"{'met' if ok_billed else 'MISSED'}",
        f"target every word, in order: {daemon.lost} lost, {daemon.extra} extra - "
        f"{'met' if ok_words else 'MISSED'}",
        f"target no request for a file without speech: {daemon.no_speech_requests} - "
        f"{'met' if ok_calls else 'MISSED'}"]
    setup = (f"{len(corpus)} voicemails ({len(corpus) - hangups} messages, {hangups} hang-ups "
             f"without speech; {fmt(total)} s of audio, {fmt(speech)} s of it speech) on "
             f"{len(FLOORS)} line noise floors, dropped at once into an idle client. "
             "Messages: 2-4 stretches of tone words with 2.5-12 s of line noise between them, "
             "2-6 s before and 3-20 s after; hang-ups: 3-25 s of line noise and a click; half "
             "8 kHz wav, half 16 kHz mp3. Daemon: defaults (60 s clips, silences over 2 s left "
             "out but 0.3 s beside speech), and the same with `skip_silence: false`; naive: one "
             "request per file. Billed = the emulator's usage.seconds (whole seconds per "
             "request, rounded up), no latency, no limits.")
    return Section(NAME, "Voicemail: silence is not paid for", setup, [t, per], verdicts,
                   ok=ok_billed and ok_words and ok_calls and daemon.run.done == len(corpus))
