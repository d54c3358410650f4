"""The floor: the least work any client must do, measured the same way as the daemon.

``post``: POSTs request bodies encoded beforehand (loaded into memory before the clock starts)
to the emulator, ``--concurrency`` at a time, as fast as it can; a 429 is retried after
``--retry-429`` seconds. ``hash-walk``: walks a folder and reads (sha256) every file once, the
least a content-keyed queue must do. Both write their figures as JSON to ``--out``::

    python -m bench.floor post --url URL --bodies DIR --concurrency 4 --out result.json
    python -m bench.floor hash-walk --root DIR --out result.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import httpx

MIME = {"wav": "audio/wav", "mp3": "audio/mpeg"}


def encode_body(data: bytes, mime: str, language: str = "auto") -> bytes:
    """A request body in exactly the shape the daemon's client sends."""
    b64 = base64.b64encode(data).decode("ascii")
    body = {"model": "mimo-v2.5-asr",
            "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": f"data:{mime};base64,{b64}"}}]}],
            "asr_options": {"language": language}, "stream": False}
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def write_bodies(files: list[Path], folder: Path) -> None:
    """Pre-encodes one body per wav/mp3 file into ``folder`` (body-000000.json, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        mime = MIME[path.suffix.lstrip(".").lower()]
        (folder / f"body-{i:06d}.json").write_bytes(encode_body(path.read_bytes(), mime))


def post_all(url: str, bodies: list[bytes], concurrency: int, key: str,
             retry_429: float) -> dict[str, Any]:
    """Sends every body once successfully (or with a final non-429 status); returns figures."""
    records: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    index = iter(range(len(bodies)))
    headers = {"api-key": key, "Content-Type": "application/json"}
    client = httpx.Client(timeout=600.0, trust_env=False,
                          limits=httpx.Limits(max_connections=concurrency + 2))
    too_many = 0

    def worker() -> None:
        nonlocal too_many
        while True:
            with lock:
                i = next(index, None)
            if i is None:
                return
            while True:
                started = time.monotonic()
                try:
                    status = client.post(url + "/chat/completions", content=bodies[i],
                                         headers=headers).status_code
                except httpx.HTTPError:
                    status = 0
                ended = time.monotonic()
                with lock:
                    records.append((started, ended, status))
                if status != 429:
                    break
                with lock:
                    too_many += 1
                time.sleep(retry_429)

    cpu0, wall0 = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    client.close()
    ok = [r for r in records if r[2] == 200]
    return {"wall": wall, "cpu": cpu, "requests": len(records), "ok": len(ok),
            "status_429": too_many, "rtts": [e - s for s, e, st in records if st == 200],
            "starts": [s - wall0 for s, _, st in ok]}


def hash_walk(root: Path) -> dict[str, Any]:
    started = time.monotonic()
    n = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            h = hashlib.sha256()
            with open(os.path.join(folder, name), "rb") as f:
                h.update(f.read())
            n += 1
    return {"wall": time.monotonic() - started, "cpu": time.process_time(), "files": n,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    sub = parser.add_subparsers(dest="mode", required=True)
    post = sub.add_parser("post")
    post.add_argument("--url", required=True)
    post.add_argument("--bodies", type=Path, required=True)
    post.add_argument("--concurrency", type=int, default=1)
    post.add_argument("--retry-429", type=float, default=0.5)
    post.add_argument("--out", type=Path, required=True)
    walk = sub.add_parser("hash-walk")
    walk.add_argument("--root", type=Path, required=True)
    walk.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.mode == "post":
        bodies = [p.read_bytes() for p in sorted(args.bodies.iterdir())]
        result = post_all(args.url, bodies, args.concurrency, os.environ["MIMO_API_KEY"],
                          args.retry_429)
    else:
        result = hash_walk(args.root)
    args.out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
