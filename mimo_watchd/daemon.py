"""The daemon: intake (watch -> settle -> ledger), a worker pool, pause/resume, reload, stop.

Threads: watchdog observers feed the ``Settler``; one scheduler thread turns settled files into
ledger jobs (``intake``); ``max_concurrency`` workers claim due jobs, through the ``PauseGate``,
and run each with a ``JobRunner`` given the job's own ``JobContext``. The main thread only
waits for signals. Every state change goes through the ledger first, so a ``kill -9`` at any
moment is recovered at the next start without loss or a second payment.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from mimo_watchd import audio, intake
from mimo_watchd.client import MimoClient
from mimo_watchd.clients import Clients
from mimo_watchd.config import Settings, WatchSettings, load, require_consistent, resolve_api_key
from mimo_watchd.errors import ConfigError, IncompleteAudioError, LedgerError, MimoWatchdError
from mimo_watchd.exitcodes import ExitCode, killed_by
from mimo_watchd.fsutil import atomic_write, remove_stale_temps
from mimo_watchd.hooks import HookRunner
from mimo_watchd.jobs import JobContext, JobRunner, Outcome
from mimo_watchd.ledger import Job, open_ledger
from mimo_watchd.metrics import Metrics, MetricsServer, serve
from mimo_watchd.notify import Notifier, WatchdogPinger
from mimo_watchd.outputs import dumps
from mimo_watchd.pausegate import PauseGate
from mimo_watchd.settle import Ready, Settler
from mimo_watchd.timestamps import iso_seconds, now_iso
from mimo_watchd.transcription import ClientTranscriber
from mimo_watchd.watcher import WatchSet

log = structlog.get_logger("mimo_watchd.daemon")

STATUS_FILE = "status.json"
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


class Daemon:
    """Owns every long-lived part; ``run`` blocks until a signal (or, with ``once``, idle)."""

    def __init__(self, settings: Settings, *, once: bool = False,
                 config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.once = once
        self.ledger = open_ledger(settings.state_dir, settings.ledger)
        self.metrics = Metrics()
        self.clients = Clients(self._new_client(settings))
        # Held while a reload swaps settings and client, and while a job's context is taken.
        self.config_lock = threading.Lock()
        self.gate = PauseGate(settings.pause_probe_seconds)
        self.stop_intake = threading.Event()
        self.stop_workers = threading.Event()
        self.wake = threading.Condition()
        self.in_progress = 0
        self.counter_lock = threading.Lock()
        # Every watch ever configured: a job queued before a reload removed its watch still
        # needs to know where its outputs go.
        self.watches = {str(w.path): w for w in settings.watches}
        self.settler = Settler(probe=audio.probe,
                               incomplete_timeout=settings.incomplete_timeout_seconds)
        self.arrived = threading.Event()  # the scheduler has arrivals to look at
        self.watchset = WatchSet(settings.watches, self._offer,
                                 rescan_interval=settings.rescan_interval_seconds)
        self.threads: list[threading.Thread] = []
        self.signals = 0
        self.exit_code = ExitCode.OK
        self.started = time.time()
        self.scan_done = threading.Event()
        self.notifier = Notifier.from_env()
        self.pinger = WatchdogPinger(self.notifier, self.alive)
        self.metrics_server: MetricsServer | None = None
        self.hooks = HookRunner(strip_env={settings.api.api_key_env},
                                on_failure=self.metrics.observe_hook_failure)
        # job id -> monotonic time of its last progress (claim, chunk done): hang detection.
        self.progress: dict[int, float] = {}

    def _new_client(self, settings: Settings) -> MimoClient:
        key = resolve_api_key(settings.api)
        # A fleet's daemons share one budget: the windows live in the shared ledger.
        limiter = self.ledger.shared_limiter(settings.api.requests_per_minute,
                                             settings.api.tokens_per_minute, key)
        client = MimoClient(settings.api, key, limiter=limiter)
        client.on_attempt = self._on_api_attempt
        return client

    def _on_api_attempt(self, status: str, usage: dict[str, Any] | None, retry: bool) -> None:
        self.metrics.observe_api(status, usage, retry=retry)

    # --- life cycle ---------------------------------------------------------------------

    def prepare_folders(self) -> None:
        problems = []
        for i, w in enumerate(self.settings.watches):
            if not w.path.is_dir():
                # An unmounted share at boot must not stop the service for good: the watcher
                # retries every second, status shows why, and the log says it loudly.
                log.error("watch.missing", watch=f"watches[{i}]", path=str(w.path))
            for key in ("processed_dir", "failed_dir", "output_dir"):
                folder = getattr(w, key)
                if folder is None:
                    continue
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    problems.append(f"watches[{i}].{key}: cannot create {folder}: "
                                    f"{exc.strerror}")
        if problems:
            raise ConfigError(problems, self._source())

    def _source(self) -> str | None:
        return str(self.config_path) if self.config_path else None

    def run(self) -> int:
        """Runs until stopped; returns the process exit code."""
        require_consistent(self.settings, self._source())
        self.prepare_folders()
        recovered = self.ledger.recover(unclean=True)
        remove_stale_temps(self.settings.state_dir, older_than=self.started)  # status.json's
        if self.once:
            self.ledger.reset_retry_times()
        log.info("daemon.start", pid=os.getpid(), watches=list(self.watches),
                 recovered_jobs=recovered, once=self.once,
                 concurrency=self.settings.api.max_concurrency)
        faulthandler.enable()  # a watchdog SIGABRT then prints every thread's stack
        self._install_signals()
        self.pinger.start()
        if self.settings.metrics.listen:
            self.metrics_server = serve(self.settings.metrics.listen, self.metrics, self.health)
        self._start_thread("scheduler", self._scheduler)
        for i in range(self.settings.api.max_concurrency):
            self._start_thread(f"worker-{i}", self._worker)
        self.notifier.extend_timeout(600)  # the initial scan of a huge backlog may take a while
        self.watchset.start()
        self.scan_done.set()
        self.write_status()
        self.notifier.ready(self.status_line())
        try:
            while not self.stop_intake.is_set():
                self.stop_intake.wait(1.0)
                self.write_status()
                if self.once and self._idle():
                    log.info("daemon.once_done")
                    self.stop_intake.set()
                    self.arrived.set()
        finally:
            self._shutdown()
        return self.exit_code

    def _idle(self) -> bool:
        if self.gate.reason is not None:
            self.exit_code = ExitCode.API
            log.error("daemon.once_paused", reason=self.gate.reason)
            return True
        counts = self.ledger.counts()
        return (self.scan_done.is_set() and self.settler.pending() == 0
                and counts["QUEUED"] == 0 and counts["PROCESSING"] == 0 and self.in_progress == 0)

    def _start_thread(self, name: str, target: Any) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
            target=self.reload, name="reload", daemon=True).start())

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            # Second signal: leave now. PROCESSING jobs are recovered at the next start.
            os.write(2, b'{"event": "daemon.exit_now", "level": "warning"}\n')
            os._exit(killed_by(signum))
        log.info("daemon.stopping", signal=signal.Signals(signum).name)
        self.stop_intake.set()
        self.arrived.set()

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: finishing in-flight jobs")
        self.watchset.stop()
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        self.stop_workers.set()
        with self.wake:
            self.wake.notify_all()
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        self.clients.close()
        for t in self.threads:
            t.join(5.0)
        self.hooks.close(max(1.0, deadline - time.monotonic()))
        if self.metrics_server is not None:
            self.metrics_server.stop()
        requeued = self.ledger.recover(unclean=False)
        log.info("daemon.stopped", requeued_jobs=requeued, abandoned_threads=stuck)
        self.write_status(stopped=True)
        self.pinger.stop()
        self.ledger.close()

    # --- intake -------------------------------------------------------------------------

    def _offer(self, arrival: Any) -> None:
        """The watchers' sink: hand over and wake the scheduler (never blocks)."""
        self.settler.offer(arrival)
        self.arrived.set()

    def _scheduler(self) -> None:
        while not self.stop_intake.is_set():
            self.arrived.clear()
            try:
                for ready in self.settler.poll():
                    self.admit(ready)
            except Exception:
                log.exception("scheduler.error")
            with self.wake:
                self.wake.notify_all()
            self.arrived.wait(min(0.5, max(0.005, self.settler.next_check_in())))

    def admit(self, ready: Ready) -> None:
        """Queues a settled file (once per identity); fails one that never became whole."""
        if all(w.path != ready.watch.path for w in self.settings.watches):
            return  # its watch was removed by a reload; a later re-add rescans the folder
        job = intake.admit(self.ledger, ready)
        if job is None or not ready.incomplete_reason:
            return
        claimed = self.ledger.claim_job(job.id)
        if claimed is not None:
            self._execute(claimed, IncompleteAudioError(
                f"incomplete audio: {ready.incomplete_reason}"))

    # --- work ---------------------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stop_workers.is_set():
            try:
                job = self._next_job()
            except LedgerError as exc:
                # A fleet's database out of reach: take nothing (nothing is sent either) and
                # look again; the jobs held meanwhile are taken over once their leases expire.
                log.error("ledger.unreachable", reason=exc.reason)
                self.stop_workers.wait(1.0)
                continue
            if job is None:
                with self.wake:
                    self.wake.wait(self._idle_wait())
                continue
            self._execute(job)

    def _context(self, job: Job) -> tuple[JobContext, MimoClient]:
        """The job's context: the settings, client and watch of now, for the whole job (the
        client is the caller's to release)."""
        with self.config_lock:
            watch = self.watch_for(job.watch)
            settings, client = self.settings, self.clients.acquire()
        ctx = JobContext(
            settings=settings, watch=watch, ledger=self.ledger,
            transcriber=ClientTranscriber(client, settings.audio), hooks=self.hooks,
            metrics=self.metrics, started_at=self.started,
            progress=lambda: self.note_progress(job.id))
        return ctx, client

    def _execute(self, job: Job, failure: MimoWatchdError | None = None) -> Outcome:
        """Runs a claimed job, or fails it with ``failure`` (worker and scheduler alike), inside
        the progress accounting, then lets the pause gate and the status see its outcome."""
        with self.counter_lock:
            self.in_progress += 1
            self.progress[job.id] = time.monotonic()
        client: MimoClient | None = None
        try:
            ctx, client = self._context(job)
            runner = JobRunner(ctx)
            outcome = runner.run(job) if failure is None else runner.fail(job, failure)
        except Exception:
            # Even failing could not be recorded (e.g. the failed folder is unwritable):
            # keep the job queued rather than lose track of the file.
            log.exception("worker.error", path=job.path)
            self.ledger.requeue(job.id, delay=self.settings.retry_delay_seconds,
                                error="internal error while finishing the job")
            outcome = Outcome(job.id, "retry")
        finally:
            with self.counter_lock:
                self.in_progress -= 1
                self.progress.pop(job.id, None)
            if client is not None:
                self.clients.release(client)
        self._after(outcome)
        return outcome

    def _idle_wait(self) -> float:
        due = self.ledger.next_due_in()
        wait = 1.0 if due is None else min(1.0, due)
        probe_in = self.gate.next_probe_in()
        if probe_in is not None:
            wait = min(wait, max(0.05, probe_in))
        return max(0.02, wait)

    def _next_job(self) -> Job | None:
        if self.stop_intake.is_set() and not self.once:
            return None  # a stop was asked: finish in-flight jobs only
        one_per_content = self.settings.on_duplicate != "transcribe"
        job = self.gate.take(lambda: self.ledger.claim(one_per_content=one_per_content))
        if job is not None and self.gate.probe == job.id:
            log.info("pause.probe", path=job.path)
        return job

    def _after(self, outcome: Outcome) -> None:
        change = self.gate.finished(outcome.job_id, outcome.error)
        if change is not None and change.paused:
            log.error("daemon.paused", reason=change.reason,
                      probe_every_seconds=self.gate.probe_every)
            self.metrics.set_paused(True)
        elif change is not None:
            log.info("daemon.resumed", paused_seconds=round(change.paused_seconds))
            self.metrics.set_paused(False)
            self.ledger.reset_retry_times()
        self.write_status()

    # --- reload -------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-reads the config; an invalid one is rejected and the old one kept.

        Jobs already running keep the settings (and client) they started with."""
        if self.config_path is None:
            return
        self.notifier.reloading()
        try:
            new = load(self.config_path)
            new_client = (self._new_client(new) if new.api != self.settings.api else None)
        except ConfigError as exc:
            log.error("reload.rejected", problems=exc.problems, config=str(self.config_path))
            self.notifier.ready(self.status_line())
            return
        with self.config_lock:
            old = self.settings
            self.settings = new
            self.watches.update({str(w.path): w for w in new.watches})
            self.gate.probe_every = new.pause_probe_seconds
            if new_client is not None:
                self.clients.replace(new_client)
        self.watchset.reconfigure(new.watches)
        log.info("reload.done", watches=[str(w.path) for w in new.watches],
                 added=sorted({str(w.path) for w in new.watches} -
                              {str(w.path) for w in old.watches}),
                 removed=sorted({str(w.path) for w in old.watches} -
                                {str(w.path) for w in new.watches}))
        self.write_status()
        self.notifier.ready(self.status_line())

    def watch_for(self, watch_path: str) -> WatchSettings:
        return self.watches[watch_path]

    # --- health and status --------------------------------------------------------------

    def note_progress(self, job_id: int) -> None:
        """A job moved forward (a chunk finished): it is not hung."""
        with self.counter_lock:
            if job_id in self.progress:
                self.progress[job_id] = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        """True while the scheduler, workers and observers run and no job is stuck.

        This gates the systemd watchdog pings, so it must not include "paused": an operator
        problem is not cured by a restart.
        """
        dead = [t.name for t in self.threads if not t.is_alive()]
        if dead and not self.stop_intake.is_set():
            return False, f"threads died: {', '.join(dead)}"
        if not self.watchset.alive():
            return False, "a folder observer died"
        limit = self.settings.worker_stall_seconds
        now = time.monotonic()
        with self.counter_lock:
            stalled = [j for j, t in self.progress.items() if now - t > limit]
        if stalled:
            return False, f"{len(stalled)} job(s) made no progress for {limit:g} s"
        return True, "ok"

    def health(self) -> tuple[bool, str]:
        """/healthz: alive, and not paused by an operator problem."""
        ok, reason = self.alive()
        if ok and self.gate.reason is not None:
            return False, f"paused: {self.gate.reason}"
        return ok, reason

    def status_line(self) -> str:
        c = self.ledger.counts()
        line = (f"queued {c['QUEUED']}, in progress {self.in_progress}, done {c['DONE']}, "
                f"failed {c['FAILED']}")
        if self.gate.reason is not None:
            line = f"PAUSED ({self.gate.reason}); " + line
        return line

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "updated_at": now_iso(),
            "started_at": iso_seconds(self.started),
            "paused": self.gate.reason is not None,
            "paused_reason": self.gate.reason,
            "in_progress": self.in_progress,
            "settling": self.settler.pending(),
            "watches": self.watchset.status(),
            "fleet": self.ledger.fleet(),
        }

    def write_status(self, *, stopped: bool = False) -> None:
        counts = self.ledger.counts()
        self.metrics.set_queue(counts["QUEUED"], self.in_progress)
        if not stopped:
            self.notifier.status(self.status_line())
        doc = self.status()
        doc["running"] = not stopped
        try:
            atomic_write(self.settings.state_dir / STATUS_FILE, dumps(doc), overwrite=True)
        except OSError as exc:
            log.warning("status.write_failed", reason=exc.strerror)


def bound_native_memory() -> None:
    """Keeps multi-MB buffers (encoded chunks, request bodies) out of glibc's heaps.

    glibc raises its mmap threshold after the first large free (up to 32 MB), so the 2-10 MB
    buffers of a long recording are then carved from per-thread heaps that fragment and are not
    given back: +50 MB peak RSS for a 3-hour file at max_concurrency 4 (``python -m bench
    long``). A fixed 1 MiB threshold maps each such buffer and unmaps it when freed.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def run(config_path: Path, *, once: bool = False) -> int:
    settings = load(config_path)
    bound_native_memory()
    from mimo_watchd import logsetup

    logsetup.configure(settings.log.level, settings.log.format)
    return Daemon(settings, once=once, config_path=config_path).run()
