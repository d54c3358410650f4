"""The naive baseline: the drop-folder script an operator writes in an afternoon.

A polling loop over the folder, one request at a time with httpx, no rate limiting, no journal,
no check that a file is whole. A failed request is printed and the file is simply tried again
at the next pass. It handles what the API takes (wav, mp3) and sends anything else as it is.
Kept deliberately plain: it is what the daemon is measured against, not an example.

    python bench/naive.py INBOX PROCESSED --url http://127.0.0.1:8765/v1 [--interval 1]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import time
from pathlib import Path

import httpx

AUDIO = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac",
         ".ogg": "audio/ogg", ".opus": "audio/ogg"}


def transcribe(client: httpx.Client, url: str, key: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mime = AUDIO[path.suffix.lower()]
    body = {"model": "mimo-v2.5-asr",
            "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": f"data:{mime};base64,{data}"}}]}],
            "asr_options": {"language": "auto"}}
    r = client.post(url + "/chat/completions", json=body, headers={"api-key": key})
    r.raise_for_status()
    text: str = r.json()["choices"][0]["message"]["content"]
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inbox", type=Path)
    parser.add_argument("processed", type=Path)
    parser.add_argument("--url", required=True)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    key = os.environ["MIMO_API_KEY"]
    client = httpx.Client(timeout=300)
    while True:
        for path in sorted(args.inbox.rglob("*")):
            if path.suffix.lower() not in AUDIO or not path.is_file():
                continue
            try:
                text = transcribe(client, args.url, key, path)
            except httpx.HTTPError as exc:
                print(f"{path}: {exc}", file=sys.stderr, flush=True)
                continue
            dest = args.processed / path.relative_to(args.inbox)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.with_suffix(".txt").write_text(text + "\n")
            shutil.move(path, dest)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
