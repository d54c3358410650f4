"""The daemon-side commands: ``run``, ``status``, ``retry``, ``check``."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from mimo_watchd.config import Secret, Settings, load, resolve_api_key
from mimo_watchd.errors import ApiError, ConfigError, JobError, LedgerError
from mimo_watchd.exitcodes import ExitCode
from mimo_watchd.fsutil import free_stem, safe_move
from mimo_watchd.ledger import Ledger, State, open_ledger
from mimo_watchd.outputs import ERROR_SUFFIX
from mimo_watchd.timestamps import iso_seconds


def cmd_run(args: argparse.Namespace) -> int:
    from mimo_watchd import daemon

    return daemon.run(args.config, once=args.once)


def _ledger(settings: Settings) -> Ledger:
    return open_ledger(settings.state_dir, settings.ledger)


def _runtime_status(settings: Settings) -> dict[str, Any]:
    from mimo_watchd.daemon import STATUS_FILE

    try:
        doc = json.loads((settings.state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"running": False}
    if doc.get("running"):
        try:
            os.kill(int(doc["pid"]), 0)
        except (OSError, ValueError, KeyError):
            doc["running"] = False  # the process is gone (crashed or killed)
    return dict(doc)


def cmd_status(args: argparse.Namespace) -> int:
    """Queue, in progress, done, failed (recent failures with reasons), paused."""
    settings = load(args.config)
    ledger = _ledger(settings)
    try:
        counts = ledger.counts()
        failures = [{"path": j.path, "moved_to": j.final_path, "reason": j.last_error,
                     "attempts": j.attempts,
                     "at": iso_seconds(j.updated_at)}
                    for j in ledger.recent_failures(args.failures)]
        fleet = ledger.fleet()
    finally:
        ledger.close()
    runtime = _runtime_status(settings)
    doc = {"running": runtime.get("running", False), "pid": runtime.get("pid"),
           "paused": bool(runtime.get("paused")) and runtime.get("running", False),
           "paused_reason": runtime.get("paused_reason"),
           "queued": counts["QUEUED"], "in_progress": counts["PROCESSING"],
           "done": counts["DONE"], "failed": counts["FAILED"],
           "settling": runtime.get("settling", 0), "watches": runtime.get("watches", []),
           "recent_failures": failures, "updated_at": runtime.get("updated_at")}
    if fleet is not None:
        doc["fleet"] = fleet
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return ExitCode.OK
    state = "running" if doc["running"] else "not running"
    print(f"mimo-watchd: {state}" + (f" (pid {doc['pid']})" if doc["running"] else ""))
    if doc["paused"]:
        print(f"PAUSED: {doc['paused_reason']}")
    print(f"queued: {doc['queued']}  in progress: {doc['in_progress']}  done: {doc['done']}  "
          f"failed: {doc['failed']}  settling: {doc['settling']}")
    if fleet is not None:
        print(f"fleet: queued {fleet['queued']}  in progress {fleet['in_progress']}")
        for h in fleet["hosts"]:
            state = "up" if h["alive"] else "down"
            print(f"  host {h['host_id']} ({state}, pid {h['pid']}, seen "
                  f"{h['seen_seconds_ago']:g} s ago): {len(h['in_flight'])} in flight"
                  + "".join(f"\n    {p}" for p in h["in_flight"]))
    for w in doc["watches"]:
        extra = f" ({w.get('reason')})" if w.get("reason") else ""
        print(f"watch {w.get('path')}: {w.get('mode')}{extra}")
    if failures:
        print("recent failures:")
        for f in failures:
            print(f"  {f['at']}  {f['path']}: {f['reason']}")
    return ExitCode.OK


def cmd_retry(args: argparse.Namespace) -> int:
    """Moves failed files back to where they arrived, so the daemon takes them again."""
    if not args.failed and not args.paths:
        print("retry: give --failed or the failed files' paths", file=sys.stderr)
        return ExitCode.USAGE
    settings = load(args.config)
    ledger = _ledger(settings)
    wanted = {Path(os.path.abspath(p)) for p in args.paths}
    moved, problems = 0, []
    try:
        for job in ledger.jobs(State.FAILED):
            if job.final_path is None or job.outcome == "retried":
                continue
            current = Path(job.final_path)
            if not args.failed and current not in wanted and Path(job.path) not in wanted:
                continue
            wanted.discard(current)
            wanted.discard(Path(job.path))
            if not current.exists():
                problems.append(f"{current}: no longer there")
                continue
            try:
                target = _back_in(Path(job.path))
                safe_move(current, target)
            except (OSError, JobError) as exc:
                problems.append(f"{current}: {exc}")
                continue
            if job.plan:
                err = Path(job.plan["sidecar_dir"]) / f"{job.plan['stem']}{ERROR_SUFFIX}"
                err.unlink(missing_ok=True)
            ledger.finish(job.id, State.FAILED, final_path=str(target), outcome="retried",
                          error=job.last_error)
            print(f"queued again: {target}")
            moved += 1
    finally:
        ledger.close()
    problems.extend(f"{p}: not a failed file known to the ledger" for p in sorted(wanted))
    for p in problems:
        print(f"retry: {p}", file=sys.stderr)
    print(f"{moved} file(s) moved back for another attempt")
    return ExitCode.FAILED if problems else ExitCode.OK


def _back_in(original: Path) -> Path:
    folder = original.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem, ext = (original.stem, original.suffix) if original.suffix else (original.name, "")
    return folder / (free_stem([(folder, [ext])], stem) + ext)


def _silence_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))
    return buf.getvalue()


def cmd_check(args: argparse.Namespace) -> int:
    """Validates config, folders and key; with --api, one tiny real request."""
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return ExitCode.CONFIG
    problems = []
    for i, w in enumerate(settings.watches):
        if not w.path.is_dir():
            problems.append(f"watches[{i}].path: {w.path} does not exist")
        for option in ("processed_dir", "failed_dir", "output_dir"):
            folder = getattr(w, option)
            if folder is not None and not _writable(folder):
                problems.append(f"watches[{i}].{option}: {folder} is not a writable folder "
                                "(it is created at start if its parent is writable)")
    if not _writable(settings.state_dir):
        problems.append(f"state_dir: {settings.state_dir} is not writable")
    key: Secret | None = None
    try:
        key = resolve_api_key(settings.api)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if settings.ledger.backend != "sqlite":
        problems.extend(_ledger_problems(settings))
    for p in problems:
        print(f"{settings.source}: {p}", file=sys.stderr)
    if problems:
        return ExitCode.CONFIG
    print(f"config ok: {len(settings.watches)} watch(es), key present")
    if not args.api or key is None:
        return ExitCode.OK
    from mimo_watchd.client import MimoClient

    client = MimoClient(settings.api, key)
    started = time.monotonic()
    try:
        t = client.transcribe(_silence_wav(), "audio/wav", 1.0)
    except ApiError as exc:
        print(f"api: FAILED: {exc.reason}", file=sys.stderr)
        return ExitCode.API
    finally:
        client.close()
    print(f"api ok: {client.url} answered in {time.monotonic() - started:.2f} s "
          f"(auth and balance fine; billed {t.usage.get('seconds')} s)")
    return ExitCode.OK


def _ledger_problems(settings: Settings) -> list[str]:
    """What keeps the fleet's ledger from opening (no DSN, no psycopg, no database)."""
    try:
        _ledger(settings).close()
    except ConfigError as exc:
        return exc.problems
    except LedgerError as exc:
        return [f"ledger: {exc.reason}"]
    return []


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    if not probe.is_dir():
        return False
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".mimo-watchd-check-"):
            pass
    except OSError:
        return False
    return True
