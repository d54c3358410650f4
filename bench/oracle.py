"""The oracle pacer: the best any client can do against the account's limits, knowing the exact
cost of every request and when the account counted it.

It sends request bodies encoded beforehand (loaded into memory before the clock starts), each
the moment the account's sliding windows (``--rpm`` requests and ``--tpm`` tokens per
``--window`` seconds) have room for it at its exact cost, with no cap on requests in flight:
first fit, the first queued request that fits goes (a smaller one fills what a larger one
leaves). No real client can know when the account counted a request; the oracle reads it from
the emulator's records (``/_emulator/calls``), so it neither wastes a margin nor earns a 429
when a burst of its own requests is counted late. A request not yet seen there counts as
counted now (it stays in the window at least 60 s more). Figures go to ``--out`` as JSON::

    python -m bench.oracle --url URL --manifest manifest.json --rpm 100 --tpm 10000 --out o.json

The manifest is a JSON list of ``{"body": PATH, "sha256": AUDIO_SHA256, "cost": TOKENS}``, costs
as the account counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

# The record's time is taken as the request is read, a moment before the account counts it.
MARGIN = 0.02
MAX_IN_FLIGHT = 256
POLL_SECONDS = 0.1  # how often the account's records are read while one is awaited


class Entry:
    """A request in the account's windows: when it was counted (None: not seen yet)."""

    __slots__ = ("at", "cost")

    def __init__(self, cost: int) -> None:
        self.at: float | None = None
        self.cost = cost


class Oracle:
    """The pacing loop and its records."""

    def __init__(self, url: str, manifest: list[dict[str, Any]], *, rpm: int, tpm: int,
                 window: float, key: str) -> None:
        self.url = url + "/chat/completions"
        self.calls_url = url.rsplit("/", 1)[0] + "/_emulator/calls"
        self.bodies = [Path(item["body"]).read_bytes() for item in manifest]
        self.costs = [int(item["cost"]) for item in manifest]
        self.index = {str(item["sha256"]): i for i, item in enumerate(manifest)}
        self.rpm, self.tpm, self.window = rpm, tpm, window + MARGIN
        self.headers = {"api-key": key, "Content-Type": "application/json"}
        self.http = httpx.Client(timeout=600.0, trust_env=False,
                                 limits=httpx.Limits(max_connections=MAX_IN_FLIGHT + 1))
        self.entries: dict[int, Entry] = {}
        self.queue = list(range(len(self.bodies)))[::-1]  # next request last
        self.in_flight = 0
        self.cond = threading.Condition()
        self.sent: list[tuple[int, float, float, int]] = []  # index, sent, ended, status
        self.rejected = 0

    def _learn(self) -> None:
        """Reads when the account counted each request it has seen."""
        for call in self.http.get(self.calls_url).json():
            i = self.index.get(str(call.get("audio_sha256")))
            if i is not None and call["status"] != 429 and i in self.entries:
                self.entries[i].at = float(call["time"])

    def _wait(self, cost: int, now: float) -> float | None:
        """Seconds until a request of ``cost`` fits both windows (0: now; None: it depends on
        a request the account has not shown yet)."""
        for i in [i for i, e in self.entries.items() if e.at is not None
                  and e.at <= now - self.window]:
            del self.entries[i]
        live = list(self.entries.values())
        known = sorted((e for e in live if e.at is not None), key=lambda e: e.at or 0.0)
        wait = 0.0
        if len(live) >= self.rpm:
            leave = len(live) - self.rpm + 1  # this many must leave the window
            if leave > len(known):
                return None
            wait = (known[leave - 1].at or 0.0) + self.window - now
        used = sum(e.cost for e in live)
        if used and used + cost > self.tpm:
            freed = 0
            for e in known:
                freed += e.cost
                if freed >= used + cost - self.tpm:
                    wait = max(wait, (e.at or 0.0) + self.window - now)
                    break
            else:
                return None
        return wait

    def _first_fit(self, now: float) -> int | None:
        """The first queued request that fits the windows now, if any."""
        return next((i for i in reversed(self.queue) if self._wait(self.costs[i], now) == 0),
                    None)

    def _send(self, i: int) -> None:
        sent = time.time()
        try:
            status = self.http.post(self.url, content=self.bodies[i],
                                    headers=self.headers).status_code
        except httpx.HTTPError:
            status = 0
        with self.cond:
            self.sent.append((i, sent, time.time(), status))
            self.in_flight -= 1
            if status in (0, 429):
                self.rejected += status == 429
                self.entries.pop(i, None)
                self.queue.append(i)
            self.cond.notify_all()

    def run(self) -> None:
        with ThreadPoolExecutor(MAX_IN_FLIGHT) as pool:
            while True:
                with self.cond:
                    if not self.queue and not self.in_flight:
                        break
                    if not self.queue or self.in_flight >= MAX_IN_FLIGHT:
                        self.cond.wait(POLL_SECONDS)
                        continue
                    now = time.time()
                    fits = self._first_fit(now)
                    if fits is not None:
                        self.entries[fits] = Entry(self.costs[fits])
                        self.queue.remove(fits)
                        self.in_flight += 1
                        pool.submit(self._send, fits)
                        continue
                    # Nothing fits: the cheapest queued request is the first that will.
                    wait = self._wait(min(self.costs[i] for i in self.queue), now)
                    self.cond.wait(POLL_SECONDS if wait is None else max(wait, 0.001))
                self._learn()
        self.http.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.oracle")
    parser.add_argument("--url", required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--rpm", type=int, required=True)
    parser.add_argument("--tpm", type=int, required=True)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    oracle = Oracle(args.url, json.loads(args.manifest.read_text()), rpm=args.rpm, tpm=args.tpm,
                    window=args.window, key=os.environ["MIMO_API_KEY"])
    started, wall0 = time.time(), time.monotonic()
    oracle.run()
    result = {"started": started, "wall": time.monotonic() - wall0, "rejected": oracle.rejected,
              "sent": [{"index": i, "sent": s, "ended": e, "status": st}
                       for i, s, e, st in oracle.sent]}
    args.out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
