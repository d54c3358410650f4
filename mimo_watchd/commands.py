"""The daemon-side commands: ``run``, ``status``, ``retry``, ``prune``, ``check``.

``status`` and ``check`` write nothing in the state folder and, like ``retry``, work while a
daemon runs there; only ``run`` takes the state folder's lock (``instance``)."""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from mimo_watchd import billing, days, instance, logsetup, retention, runstatus
from mimo_watchd.config import Secret, Settings, load, resolve_api_key
from mimo_watchd.config.checks import hook_problems
from mimo_watchd.errors import ApiError, ApiUnreachableError, ConfigError, JobError, LedgerError
from mimo_watchd.exitcodes import ExitCode
from mimo_watchd.fsutil import free_stem, safe_move
from mimo_watchd.ledger import Job, State, open_ledger, read_ledger
from mimo_watchd.ledger.sqlite import LEDGER_FILE
from mimo_watchd.outputs import ERROR_SUFFIX, dumps
from mimo_watchd.timestamps import iso_seconds


def cmd_run(args: argparse.Namespace) -> int:
    from mimo_watchd import daemon

    return daemon.run(args.config, once=args.once)


def cmd_status(args: argparse.Namespace) -> int:
    """Files queued, in progress, done and failed (recent failures: where the file is now, when
    and why), whether the daemon runs and whether it is paused, and why since when.

    Exits 0 while a daemon runs on the state folder, 3 when none does (LSB's "not running",
    as ``systemctl status``). Reads only: creates no folder, no ledger, no file."""
    _escaped_stdout()
    settings = load(args.config)
    try:
        pid = instance.holder(settings.state_dir)
    except OSError as exc:  # e.g. the service's state folder, read by another user
        raise ConfigError([f"state_dir: cannot read {settings.state_dir}: "
                           f"{exc.strerror or exc}"], str(args.config)) from exc
    running = pid is not None
    runtime = (runstatus.read(settings.state_dir) or {}) if running else {}
    ledger = read_ledger(settings.state_dir, settings.ledger)
    counts = dict.fromkeys(("QUEUED", "PROCESSING", "DONE"), 0)
    failed, failures, bill, fleet = 0, [], None, None
    if ledger is not None:
        try:
            counts = ledger.counts()
            failed = ledger.failed_files()
            failures = [_failure(j) for j in ledger.recent_failures(args.failures)]
            fleet = ledger.fleet()
            bill = billing.summary(ledger, settings.api, days.zone(settings.timezone))
        finally:
            ledger.close()
    # Without a daemon, jobs the ledger still calls in progress were cut off by an unclean
    # stop: they are taken again at the next start (in a fleet, other hosts may run them).
    interrupted = 0 if running or fleet is not None else counts["PROCESSING"]
    where = "postgres" if fleet is not None else str(settings.state_dir / LEDGER_FILE)
    doc = {"running": running, "pid": pid or runtime.get("pid"),
           "ledger": where if ledger else None,
           "paused": bool(runtime.get("paused")),
           "paused_reason": runtime.get("paused_reason"),
           "paused_since": runtime.get("paused_since"),
           "queued": counts["QUEUED"] + interrupted,
           "in_progress": counts["PROCESSING"] - interrupted, "interrupted": interrupted,
           "done": counts["DONE"], "failed": failed,
           "settling": runtime.get("settling", 0), "watches": runtime.get("watches", []),
           "recent_failures": failures, "bill": bill, "updated_at": runtime.get("updated_at")}
    if fleet is not None:
        doc["fleet"] = fleet
    code = ExitCode.OK if running else ExitCode.NOT_RUNNING
    if args.json:
        sys.stdout.write(dumps(doc))
        return code
    state = f"running (pid {doc['pid']})" if running else "not running"
    print(f"mimo-watchd: {state}; state folder {settings.state_dir}")
    if ledger is None:
        print("no ledger yet: no daemon has run on this state folder")
    if doc["paused"]:
        print(f"PAUSED since {doc['paused_since']}: {doc['paused_reason']}")
    print(f"files: queued {doc['queued']}, in progress {doc['in_progress']}, done {doc['done']}, "
          f"failed {doc['failed']}, settling {doc['settling']}")
    if interrupted:
        print(f"  ({interrupted} of the queued were in progress when the daemon stopped "
              "uncleanly; they are taken again at the next start)")
    if fleet is not None:
        print(f"fleet: queued {fleet['queued']}, in progress {fleet['in_progress']}")
        for h in fleet["hosts"]:
            up = "up" if h["alive"] else "down"
            print(f"  host {h['host_id']} ({up}, pid {h['pid']}, seen "
                  f"{h['seen_seconds_ago']:g} s ago): {len(h['in_flight'])} in flight"
                  + "".join(f"\n    {p}" for p in h["in_flight"]))
    for line in billing.summary_lines(bill) if bill is not None else ():
        print(line)
    for w in doc["watches"]:
        extra = f" ({w.get('reason')})" if w.get("reason") else ""
        print(f"watch {w.get('path')}: {w.get('mode')}{extra}")
    if failures:
        print("recent failures (newest first; where each file is now):")
        for f in failures:
            print(f"  {f['failed_at']}  {f['path']}: {f['reason']}")
    return code


def _escaped_stdout() -> None:
    """Paths are shown as they are, except bytes that are not UTF-8, as ``\\udcXX`` escapes
    (as on stderr), so that one such name cannot make a command fail."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def _failure(job: Job) -> dict[str, Any]:
    """A failed file as ``status`` shows it: where it is now, when it failed, why (once)."""
    result = job.result or {}
    reason = job.last_error or ""
    for named in (job.path, job.final_path):
        if named:
            reason = reason.removeprefix(f"{named}: ")  # audio errors start with the file
    return {"path": job.final_path, "original_path": job.path, "reason": reason,
            "attempts": job.attempts,
            "failed_at": result.get("failed_at") or iso_seconds(job.updated_at)}


def cmd_retry(args: argparse.Namespace) -> int:
    """Moves failed files back to where they arrived, so the daemon takes them again."""
    if not args.failed and not args.paths:
        print("retry: give --failed or the failed files' paths", file=sys.stderr)
        return ExitCode.USAGE
    _escaped_stdout()
    settings = load(args.config)
    wanted = {Path(os.path.abspath(p)) for p in args.paths}
    moved, problems = 0, []
    fleet = settings.ledger.backend != "sqlite"
    if not fleet and not (settings.state_dir / LEDGER_FILE).exists():  # make no ledger
        print(f"retry: no ledger in {settings.state_dir}: nothing has failed there",
              file=sys.stderr)
        return ExitCode.FAILED if wanted else ExitCode.OK
    ledger = open_ledger(settings.state_dir, settings.ledger)
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


def cmd_prune(args: argparse.Namespace) -> int:
    """Deletes (``--dry-run``: lists) the files whose retention period is over, as the daemon
    does every hour; exits 1 when some could not be deleted. Works while a daemon runs."""
    _escaped_stdout()
    settings = load(args.config)
    if not any(w.retention for w in settings.watches):
        print("prune: no watch has a retention section: nothing is ever deleted")
        return ExitCode.OK
    ledger = read_ledger(settings.state_dir)
    if ledger is None:
        print(f"prune: no ledger in {settings.state_dir}: nothing was processed there")
        return ExitCode.OK
    logsetup.configure(settings.log.level, settings.log.format)  # one line per file, on stderr
    try:
        results = retention.prune(settings.watches, ledger, dry_run=args.dry_run)
    finally:
        ledger.close()
    verb = "would delete" if args.dry_run else "deleted"
    for r in results:
        if args.dry_run or r.deleted:
            print(f"{verb} {r.file.path} ({r.file.kind}, {r.file.age_days:g} days)")
    failed = [r for r in results if not args.dry_run and not r.deleted]
    for r in failed:
        print(f"prune: kept {r.file.path}: {r.error}", file=sys.stderr)
    count = len(results) - len(failed)
    print(f"{count} file(s) {verb}" + (f", {len(failed)} kept" if failed else ""))
    return ExitCode.FAILED if failed else ExitCode.OK


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
    """Validates config, folders, hooks and key; with --api, one tiny real request.

    Exits 0 when all is well, 78 for a problem of the configuration, the key or a hook, 69 when
    the API refused the request (key, balance, URL), 68 when it could not be reached."""
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return ExitCode.CONFIG
    logsetup.configure(settings.log.level, settings.log.format)  # the client's retry lines
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
    problems.extend(hook_problems(settings))
    key: Secret | None = None
    try:
        key = resolve_api_key(settings.api)
    except ConfigError as exc:
        problems.extend(exc.problems)
    for warning in settings.warnings:
        print(f"{settings.source}: warning: {warning}", file=sys.stderr)
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
    from mimo_watchd.protocol import read_usage

    client = MimoClient(settings.api, key)
    started = time.monotonic()
    try:
        t = client.transcribe(_silence_wav(), "audio/wav", 1.0)
    except ApiUnreachableError as exc:
        print(f"api: FAILED: {client.url}: {exc.reason}", file=sys.stderr)
        return ExitCode.API_UNREACHABLE
    except ApiError as exc:
        print(f"api: FAILED: {client.url}: {exc.reason}", file=sys.stderr)
        return ExitCode.API
    finally:
        client.close()
    billed = read_usage(t.usage)["seconds"]
    print(f"api ok: {client.url} answered in {time.monotonic() - started:.2f} s "
          "(auth and balance fine; "
          + ("billed seconds not reported)" if billed is None else f"billed {billed} s)"))
    return ExitCode.OK


def _ledger_problems(settings: Settings) -> list[str]:
    """What keeps the fleet's ledger from opening (no DSN, no psycopg, no database)."""
    try:
        open_ledger(settings.state_dir, settings.ledger).close()
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
