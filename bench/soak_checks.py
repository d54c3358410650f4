"""The soak's invariants, checked on the folders, the ledger and the emulator's calls at the end.

Each check prints one line (PASS/FAIL, the figures, a few examples of what broke it);
``check_all`` returns whether every one passed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Deployment

SIDECARS = (".txt", ".json")
ERROR_SUFFIX = ".error.json"
KILL_SLACK = 2.0  # seconds after an answer's expected end in which a kill excuses a re-payment


@dataclass(frozen=True)
class Input:
    """One file the soak delivered: where, how, and what its transcript must be."""

    name: str  # relative to the inbox
    fmt: str
    protocol: str
    seconds: float
    words: list[str] | None  # None: broken on purpose
    sha256: str


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _audio_files(folder: Path) -> list[Path]:
    out = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if not name.endswith(SIDECARS) and not name.startswith("."):
                out.append(Path(root) / name)
    return out


def _report(name: str, problems: list[str], detail: str, out: list[str]) -> bool:
    """Prints (and appends to ``out``) the invariant's line and a few of its problems."""
    status = "PASS" if not problems else "FAIL"
    lines = [f"INVARIANT {status}: {name} - {detail}", *[f"    {p}" for p in problems[:8]]]
    if len(problems) > 8:
        lines.append(f"    ... and {len(problems) - 8} more")
    for line in lines:
        print(line, flush=True)
    out.extend(lines)
    return not problems


def _sidecar_problems(item: Input, audio: Path, dep: Deployment) -> list[str]:
    stem = audio.parent / audio.stem
    if dep.failed in audio.parents:
        err = stem.with_name(stem.name + ERROR_SUFFIX)
        try:
            doc = json.loads(err.read_text())
        except (OSError, ValueError) as exc:
            return [f"{audio}: no valid error file ({exc})"]
        return [] if doc.get("reason") else [f"{err}: no reason"]
    try:
        txt = stem.with_suffix(".txt").read_text(encoding="utf-8")
        doc = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{audio}: sidecars missing or invalid ({exc})"]
    problems = []
    if not str(doc.get("schema", "")).startswith("mimo-watchd/transcript"):
        problems.append(f"{audio}: JSON schema {doc.get('schema')!r}")
    if txt.rstrip("\n") != doc.get("transcript"):
        problems.append(f"{audio}: .txt and .json transcripts differ")
    if (doc.get("source") or {}).get("sha256") != item.sha256:
        problems.append(f"{audio}: JSON source.sha256 is not the input's")
    return problems


def check_all(dep: Deployment, inputs: list[Input], calls: list[dict[str, Any]],
              kills: list[float], *, latency_scale: float, crashes: list[str],
              drain_code: int, out: list[str]) -> bool:
    """Checks and prints every invariant (its lines also go to ``out``); True when all hold."""
    audio = _audio_files(dep.processed) + _audio_files(dep.failed)
    by_sha: dict[str, list[Path]] = defaultdict(list)
    for path in audio:
        by_sha[_sha(path)].append(path)
    results = []

    # 1. every input is in processed or failed exactly once
    problems = []
    where: dict[str, Path] = {}
    for item in inputs:
        found = by_sha.get(item.sha256, [])
        if len(found) != 1:
            problems.append(f"{item.name} ({item.protocol}, {item.fmt}): found {len(found)} "
                            f"times {[str(p) for p in found]}")
        else:
            where[item.name] = found[0]
    strays = [str(p) for sha, paths in by_sha.items() for p in paths
              if sha not in {i.sha256 for i in inputs}]
    problems += [f"audio that is no input: {p}" for p in strays]
    done = sum(1 for p in where.values() if dep.processed in p.parents)
    results.append(_report("every input is in processed or failed exactly once", problems,
                           f"{len(inputs)} inputs: {done} processed, {len(where) - done} failed",
                           out))

    # 2. valid sidecars or an error file; well-formed inputs transcribed exactly
    problems = []
    exact = 0
    for item in inputs:
        located = where.get(item.name)
        if located is None:
            continue
        problems += _sidecar_problems(item, located, dep)
        if item.words is None:
            continue
        if dep.processed not in located.parents:
            reason = _error_reason(located)
            problems.append(f"{item.name}: well-formed but failed: {reason}")
            continue
        doc = json.loads(located.with_suffix(".json").read_text(encoding="utf-8"))
        # Each chunk's transcript ends in a full stop (the emulator's), so compare words.
        if str(doc.get("transcript")).replace(".", "").split() != item.words:
            problems.append(f"{item.name}: transcript differs from its {len(item.words)} words")
        else:
            exact += 1
    broken = sum(1 for i in inputs if i.words is None)
    results.append(_report("each with valid sidecars or an error file", problems,
                           f"{exact} of {len(inputs) - broken} well-formed inputs transcribed "
                           f"word for word; {broken} broken on purpose", out))

    # 3. no temp files left
    leftovers = [str(Path(r) / f) for r, _d, files in os.walk(dep.root) for f in files
                 if f.startswith(".mimo-watchd-") or f.endswith((".tmp", ".part"))]
    leftovers += [str(p) for p in dep.inbox.rglob("*") if p.is_file()]
    results.append(_report("no temp files left (and the inbox is empty)", leftovers,
                           f"{len(leftovers)} found", out))

    # 4. billed calls per chunk of content, every repayment explained
    results.append(_check_billing(calls, kills, latency_scale, _answers_journaled(dep), out))

    # 5. ledger and folders agree
    results.append(_check_ledger(dep, inputs, where, audio, out))

    # 6. the daemon only ever died when it was killed
    problems = [f"crash: ...{tail[-600:]}" for tail in crashes]
    if drain_code not in (0, 1):
        problems.append(f"final run --once exited {drain_code}")
    results.append(_report("the daemon never died unasked; the final drain finished", problems,
                           f"{len(crashes)} crashes, drain exit {drain_code}", out))
    return all(results)


def _error_reason(path: Path) -> str:
    try:
        doc = json.loads(path.with_name(path.stem + ERROR_SUFFIX).read_text())
        return str(doc.get("reason"))[:200]
    except (OSError, ValueError):
        return "(no error file)"


def _answers_journaled(dep: Deployment) -> dict[str, str]:
    """request_id -> "FILE SPAN" for every journaled answer (to say whose chunk was paid)."""
    rows = dep.query_ledger("SELECT j.path, r.span, r.raw FROM responses r "
                            "JOIN jobs j ON j.id = r.job_id")
    return {str(json.loads(raw).get("id")): f"{Path(path).name} {span}"
            for path, span, raw in rows}


# Faults after which the model ran but its answer never reached the daemon in full.
LOST = {
    "slow": "answered after the client's read timeout",
    "drop-headers": "connection dropped before the status line",
    "drop-body": "connection dropped mid-body",
    "drop-stream": "stream cut mid-way",
    "no-done": "stream without [DONE]",
}


def _repaid_because(call: dict[str, Any], kills: list[float], latency_scale: float
                    ) -> str | None:
    """Why a chunk billed in ``call`` had to be paid again, or None when nothing explains it."""
    end = call["time"] + latency_scale * (0.3 + 0.03 * (call.get("duration") or 0))
    killed = any(call["time"] <= k <= end + KILL_SLACK for k in kills)
    if call.get("ok"):
        # Delivered whole: only a kill between the answer and its journal entry loses it.
        return "kill -9 between the answer and its journal entry" if killed else None
    if call.get("fault") in LOST:
        return f"answer lost: {LOST[call['fault']]} (injected {call['fault']})"
    if killed:
        return "kill -9 while the answer was in flight"
    if call.get("error") == "client gone before the answer":
        return "the client timed out before the answer (no fault injected)"
    return None


def _check_billing(calls: list[dict[str, Any]], kills: list[float], latency_scale: float,
                   journaled: dict[str, str], out: list[str]) -> bool:
    """Billed calls per chunk of content, and a cause for every chunk billed more than once.

    The account bills a call once its model ran, whether or not the answer arrived (the
    emulator's ``billed``); a delivered one is ``ok``. A repayment is explained when the earlier
    billed answer was lost (a fault that breaks the answer, the client gone) or was delivered
    just as a kill -9 struck, before its journal entry.
    """
    billed = [c for c in calls if c.get("billed") and c.get("audio_sha256")]
    by_sha: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in billed:
        by_sha[c["audio_sha256"]].append(c)
    problems = []
    causes: Counter[str] = Counter()
    for sha, group in by_sha.items():
        group.sort(key=lambda c: c["time"])
        for prev in group[:-1]:
            cause = _repaid_because(prev, kills, latency_scale)
            if cause is not None:
                causes[cause] += 1
                continue
            start = group[0]["time"]
            seen = ", ".join(
                f"{c.get('fault') or 'no fault'}{' delivered' if c.get('ok') else ''} at "
                f"+{c['time'] - start:.1f} s, journaled as "
                f"{journaled.get(str(c.get('request_id')), 'nothing')}" for c in group)
            problems.append(f"chunk {sha[:12]} billed {len(group)} times ({seen}): nothing "
                            "explains the repayment")
    faults = Counter(c.get("fault") for c in calls if c.get("fault"))
    statuses = Counter(c.get("status") for c in calls)
    delivered = sum(1 for c in calls if c.get("ok"))
    per_chunk = len(billed) / len(by_sha) if by_sha else 0.0
    repaid = "; ".join(f"{n} {cause}" for cause, n in causes.most_common()) or "none"
    detail = (f"{len(calls)} calls, {len(billed)} billed, {delivered} delivered, for "
              f"{len(by_sha)} distinct chunks: {per_chunk:.3f} billed calls per chunk; faults "
              f"injected {dict(faults)}; statuses {dict(statuses)}; repayments: {repaid}")
    return _report("every chunk billed once, each repayment explained", problems, detail, out)


def _check_ledger(dep: Deployment, inputs: list[Input], where: dict[str, Path],
                  audio: list[Path], out: list[str]) -> bool:
    rows = dep.query_ledger("SELECT path, state, final_path, outcome FROM jobs")
    problems = []
    states = Counter(state for _p, state, _f, _o in rows)
    active = [p for p, state, _f, _o in rows if state in ("QUEUED", "PROCESSING")]
    problems += [f"job still active: {p}" for p in active]
    finals: Counter[str] = Counter()
    for path, state, final, outcome in rows:
        if state not in ("DONE", "FAILED"):
            continue
        if final is None:
            problems.append(f"{path}: {state} ({outcome}) with no final path")
            continue
        finals[final] += 1
        folder = dep.processed if state == "DONE" else dep.failed
        if folder not in Path(final).parents or not Path(final).is_file():
            problems.append(f"{path}: {state} but {final} is not a file in {folder.name}/")
    problems += [f"{f}: {n} finished jobs" for f, n in finals.items() if n > 1]
    on_disk = {str(p) for p in audio}
    problems += [f"{p}: on disk, no finished job" for p in sorted(on_disk - set(finals))]
    jobs_per_path = Counter(p for p, _s, _f, _o in rows)
    for item in inputs:
        n = jobs_per_path.get(str(dep.inbox / item.name), 0)
        if n != 1:
            problems.append(f"{item.name}: {n} jobs")
        elif str(where.get(item.name)) not in finals:
            problems.append(f"{item.name}: its job's final path is not where the file is")
    return _report("ledger and folders agree", problems,
                   f"{len(rows)} jobs {dict(states)}, {len(on_disk)} audio files on disk", out)
