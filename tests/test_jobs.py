"""One job, run in-process in milliseconds: a fake transcriber, a real SQLite ledger, real files
(and, for the logging context, the real client against the emulator)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from mimo_watchd import placement
from mimo_watchd.audio import AudioInfo
from mimo_watchd.client import MimoClient
from mimo_watchd.config import (
    HookSettings,
    Secret,
    Settings,
    WatchSettings,
    default_api_settings,
    default_audio_settings,
)
from mimo_watchd.emulator import Emulator, FaultRule, tones
from mimo_watchd.errors import OperatorError, PermanentApiError, TransientApiError
from mimo_watchd.inputs import InputFile
from mimo_watchd.jobs import JobContext, JobRunner, Outcome
from mimo_watchd.ledger import Job, SqliteLedger, State
from mimo_watchd.transcription import (
    ChunkResult,
    ClientTranscriber,
    Journal,
    TranscriptResult,
    sum_usage,
)

SPAN = "0.000-1.000"
USAGE = {"seconds": 2, "prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}


class FakeTranscriber:
    """Answers one chunk per file like the real transcriber: from the journal when it holds
    the answer, else "paid" (journaled first); raises the queued errors first."""

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.paid = 0
        self.errors: list[Exception] = []
        self.fail_after_paying: Exception | None = None

    def transcribe(self, source: InputFile, *, sha256: str, language: str, journal: Journal,
                   on_chunk: Any, subtitles: bool) -> TranscriptResult:
        self.calls.append(source.path)
        if self.errors:
            raise self.errors.pop(0)
        raw = journal.lookup(SPAN)
        from_journal = raw is not None
        if raw is None:
            self.paid += 1
            raw = {"id": f"req-{self.paid}", "text": f"words of {source.path.name}",
                   "usage": USAGE}
            journal.record(SPAN, raw)
        if self.fail_after_paying is not None:
            error, self.fail_after_paying = self.fail_after_paying, None
            raise error
        on_chunk()
        chunk = ChunkResult(index=0, start=0.0, end=1.0, text=raw["text"], request_id=raw["id"],
                            usage=raw["usage"], attempts=0 if from_journal else 1,
                            api_seconds=0.25, overlapped=False, from_journal=from_journal)
        info = AudioInfo(source.reader, "wav", "pcm_s16le", 1.0, 16000, 1,
                         os.fstat(source.fd).st_size)
        return TranscriptResult(path=source.path, sha256=sha256, info=info, text=chunk.text,
                                language=language, model="mimo-v2.5-asr", chunks=[chunk],
                                started_at="2025-01-01T00:00:00.000Z",
                                finished_at="2025-01-01T00:00:01.000Z", api_seconds=0.25,
                                usage=sum_usage([chunk]))


@dataclass
class Recorder:
    """Stands in for the hook runner and the metrics: remembers what it was given."""

    hooks: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    outcomes: list[tuple[str, float | None]] = field(default_factory=list)
    progress: int = 0

    def submit(self, hook: HookSettings, outcome: str, payload: Mapping[str, Any],
               paths: Mapping[str, str]) -> bool:
        self.hooks.append((outcome, dict(payload), dict(paths)))
        return True

    def observe_job(self, outcome: str, seconds: float | None = None,
                    fields: Mapping[str, Any] | None = None) -> None:
        self.outcomes.append((outcome, seconds))

    def moved_on(self) -> None:
        self.progress += 1


class Clock:
    """A monotonic clock that advances 0.5 s each time it is read."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


class World:
    """A watch (real folders), a real ledger, and the fakes a job's context holds."""

    def __init__(self, root: Path) -> None:
        self.inbox, self.processed, self.failed = (root / n for n in ("in", "done", "failed"))
        self.inbox.mkdir()
        self.watch = WatchSettings(path=self.inbox, processed_dir=self.processed,
                                   failed_dir=self.failed,
                                   on_success=HookSettings(command=("true",)),
                                   on_failure=HookSettings(command=("true",)))
        self.settings = Settings(watches=(self.watch,), state_dir=root / "state",
                                 max_attempts=2, max_interruptions=2, retry_delay_seconds=30.0)
        self.ledger = SqliteLedger(self.settings.state_dir)
        self.transcriber = FakeTranscriber()
        self.seen = Recorder()

    def context(self, settings: Settings | None = None) -> JobContext:
        return JobContext(settings=settings or self.settings, watch=self.watch,
                          ledger=self.ledger, transcriber=self.transcriber, hooks=self.seen,
                          metrics=self.seen, started_at=0.0, clock=Clock(),
                          progress=self.seen.moved_on)

    def arrive(self, name: str, content: bytes = b"RIFF audio") -> Path:
        path = self.inbox / name
        path.write_bytes(content)
        return path

    def claim(self, name: str, content: bytes = b"RIFF audio", *, now: float | None = None
              ) -> Job:
        """Queues ``name`` (written with ``content``) and claims it."""
        path = self.arrive(name, content)
        st = path.stat()
        self.ledger.enqueue(watch=str(self.inbox), path=str(path), size=st.st_size,
                            mtime_ns=st.st_mtime_ns, sha256=hashlib.sha256(content).hexdigest(),
                            arrived_at="t0")
        job = self.ledger.claim(now)
        assert job is not None and job.path == str(path)
        return job

    def run(self, job: Job, settings: Settings | None = None) -> Outcome:
        return JobRunner(self.context(settings)).run(job)

    def job(self, job_id: int) -> Job:
        job = self.ledger.get(job_id)
        assert job is not None
        return job

    def sidecar(self, stem: str) -> dict[str, Any]:
        return dict(json.loads((self.processed / f"{stem}.json").read_text()))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.ledger.close()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every log line while the test runs, with the bound context merged in."""
    capture = LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)


def lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


def test_a_file_is_transcribed_moved_recorded_and_announced(
        world: World, logs: list[dict[str, Any]]) -> None:
    """A new file: transcribed, sidecars written, audio moved, the ledger DONE, the hook and
    the metrics fed from the same record, one job.done line naming the file."""
    job = world.claim("a.wav")
    assert world.run(job) == Outcome(job.id, "done")
    assert (world.processed / "a.wav").exists() and not (world.inbox / "a.wav").exists()
    assert (world.processed / "a.txt").read_text() == "words of a.wav\n"
    doc = world.sidecar("a")
    assert doc["source"]["path"] == str(world.processed / "a.wav")
    assert doc["source"]["original_path"] == str(world.inbox / "a.wav")
    assert doc["timing"]["arrived_at"] == "t0" and doc["usage"]["seconds"] == 2
    done = world.job(job.id)
    assert (done.state, done.outcome, done.final_path) == (
        State.DONE, "done", str(world.processed / "a.wav"))
    assert world.seen.hooks == [("done", doc, {
        "source": str(world.inbox / "a.wav"), "audio": str(world.processed / "a.wav"),
        "txt": str(world.processed / "a.txt"), "json": str(world.processed / "a.json")})]
    assert world.seen.outcomes == [("done", 0.5)] and world.seen.progress == 1
    (line,) = lines(logs, "job.done")
    assert line["log_level"] == "info"
    assert (line["path"], line["job"]) == (str(world.inbox / "a.wav"), job.id)
    assert (line["billed_seconds"], line["tokens"], line["api_calls"]) == (2, 35, 1)
    assert line["latency_seconds"] == 0.5 and line["resumed"] is False


def test_a_duplicate_reuses_the_transcript_and_pays_nothing(
        world: World, logs: list[dict[str, Any]]) -> None:
    """on_duplicate reuse: the same content under another name is not transcribed again; its
    sidecar names the original, and its job line reports nothing paid (issue 11 item 13)."""
    world.run(world.claim("a.wav"))
    job = world.claim("copy.wav")
    assert world.run(job).outcome == "duplicate"
    assert world.transcriber.calls == [world.inbox / "a.wav"]
    doc = world.sidecar("copy")
    assert doc["duplicate_of"] == str(world.processed / "a.wav")
    assert doc["transcript"] == "words of a.wav"
    assert doc["source"]["path"] == str(world.processed / "copy.wav")
    line = lines(logs, "job.done")[-1]
    assert line["outcome"] == "duplicate"
    assert (line["billed_seconds"], line["tokens"], line["api_calls"]) == (0, 0, 0)
    assert line["duplicate_of"] == str(world.processed / "a.wav")


def test_duplicate_policy_transcribe_pays_again(world: World) -> None:
    """on_duplicate transcribe: the same content is transcribed (and paid) again, its answer
    not taken from the other job's journal."""
    settings = Settings(**{**world.settings.__dict__, "on_duplicate": "transcribe"})
    world.run(world.claim("a.wav"), settings)
    assert world.run(world.claim("copy.wav"), settings).outcome == "done"
    assert world.transcriber.paid == 2
    assert "duplicate_of" not in world.sidecar("copy")


def test_duplicate_policy_skip_moves_without_outputs(
        world: World, logs: list[dict[str, Any]]) -> None:
    """on_duplicate skip: moved to processed with no sidecars; the hook hears of it."""
    settings = Settings(**{**world.settings.__dict__, "on_duplicate": "skip"})
    world.run(world.claim("a.wav"), settings)
    job = world.claim("copy.wav")
    assert world.run(job, settings).outcome == "skipped"
    assert (world.processed / "copy.wav").exists() and not (world.processed / "copy.json").exists()
    assert world.job(job.id).outcome == "skipped"
    assert world.seen.hooks[-1][:2] == ("skipped",
                                        {"duplicate_of": str(world.processed / "a.wav")})
    line = lines(logs, "job.done")[-1]
    assert (line["billed_seconds"], line["api_calls"]) == (0, 0)


def test_names_are_chosen_once_the_transcript_exists(world: World) -> None:
    """Sidecars another recording (a.mp3) wrote under the same stem while this one was being
    transcribed are never overwritten: this file's sidecars keep its extension (issue 11 item
    10) and its audio keeps its name."""
    other = world.processed / "a.json"

    class Racing(FakeTranscriber):
        def transcribe(self, source: InputFile, **kw: Any) -> TranscriptResult:
            world.processed.mkdir()
            other.write_text("{}")  # a.mp3's sidecar, finished meanwhile
            return super().transcribe(source, **kw)

    world.transcriber = Racing()
    assert world.run(world.claim("a.wav")).outcome == "done"
    assert other.read_text() == "{}"
    assert world.sidecar("a.wav")["source"]["path"] == str(world.processed / "a.wav")
    assert (world.processed / "a.wav.txt").read_text() == "words of a.wav\n"


def test_a_transient_failure_is_retried_then_fails_at_max_attempts(
        world: World, logs: list[dict[str, Any]]) -> None:
    """A transient error requeues the job with backoff (job.retry at warning) until
    max_attempts; then the file goes to failed_dir with its error file (job.failed at error,
    issue 11 item 11)."""
    world.transcriber.errors = [TransientApiError("HTTP 503: busy", status=503)] * 2
    job = world.claim("a.wav")
    assert world.run(job).outcome == "retry"
    queued = world.job(job.id)
    assert queued.state is State.QUEUED and queued.last_error == "HTTP 503: busy"
    (retry,) = lines(logs, "job.retry")
    assert retry["log_level"] == "warning" and retry["retry_in_seconds"] == 30.0
    again = world.ledger.claim(queued.next_attempt_at + 1)
    assert again is not None and again.attempts == 2
    assert world.run(again).outcome == "failed"
    assert (world.failed / "a.wav").exists()
    err = json.loads((world.failed / "a.error.json").read_text())
    assert (err["error"], err["http_status"], err["attempts"]) == ("TransientApiError", 503, 2)
    assert world.job(job.id).state is State.FAILED
    (failed,) = lines(logs, "job.failed")
    assert failed["log_level"] == "error" and failed["reason"] == "HTTP 503: busy"
    assert world.seen.hooks[-1][0] == "failed"
    assert world.seen.hooks[-1][2]["error_json"] == str(world.failed / "a.error.json")


def test_a_permanent_failure_fails_at_once(world: World) -> None:
    """A permanent API error fails the file on its first attempt."""
    world.transcriber.errors = [PermanentApiError("HTTP 400: bad audio", status=400)]
    assert world.run(world.claim("a.wav")).outcome == "failed"
    assert (world.failed / "a.error.json").exists()


def test_an_operator_problem_pauses_without_spending_an_attempt(world: World) -> None:
    """A pausing error (here a 401) requeues the job, its attempt refunded, nothing moved,
    and the outcome carries the error for the pause gate."""
    error = OperatorError("HTTP 401: bad key", status=401)
    world.transcriber.errors = [error]
    job = world.claim("a.wav")
    assert world.run(job) == Outcome(job.id, "paused", error)
    queued = world.job(job.id)
    assert (queued.state, queued.attempts) == (State.QUEUED, 0)
    assert (world.inbox / "a.wav").exists() and not world.seen.outcomes


def test_a_crash_loop_fails_the_file_without_running_it(
        world: World, logs: list[dict[str, Any]]) -> None:
    """A job the daemon died in max_interruptions times goes to failed_dir untouched."""
    job = world.claim("a.wav")
    for _ in range(2):
        world.ledger.recover(unclean=True)
        claimed = world.ledger.claim()
        assert claimed is not None
        job = claimed
    assert job.interruptions == 2
    assert world.run(job).outcome == "failed"
    assert world.transcriber.calls == []
    err = json.loads((world.failed / "a.error.json").read_text())
    assert err["error"] == "CrashLoopError" and "2 times" in err["reason"]
    assert lines(logs, "job.crash_loop")


def test_a_vanished_file_is_recorded_and_nothing_is_written(world: World) -> None:
    """A file gone before its job runs ends the job as vanished, with no outputs."""
    job = world.claim("a.wav")
    (world.inbox / "a.wav").unlink()
    assert world.run(job).outcome == "vanished"
    assert (world.job(job.id).state, world.job(job.id).outcome) == (State.FAILED, "vanished")
    assert not world.processed.exists() and not world.failed.exists()


def test_a_job_killed_after_its_plan_resumes_from_the_plan(
        world: World, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]) -> None:
    """A daemon killed between recording the plan and writing the outputs: the next run
    carries out the recorded plan from the recorded result, with no new transcription."""

    class Killed(BaseException):
        """What a kill -9 looks like from inside: nothing after it runs."""

    def killed(*args: Any, **kwargs: Any) -> placement.Placed:
        raise Killed

    job = world.claim("a.wav")
    monkeypatch.setattr(placement, "carry_out", killed)
    with pytest.raises(Killed):
        world.run(job)
    monkeypatch.undo()
    world.ledger.recover(unclean=True)
    resumed = world.ledger.claim()
    assert resumed is not None and resumed.plan is not None and resumed.result is not None
    assert world.run(resumed).outcome == "done"
    assert world.transcriber.calls == [world.inbox / "a.wav"]
    assert world.sidecar("a")["transcript"] == "words of a.wav"
    assert lines(logs, "job.resume") and lines(logs, "job.done")[-1]["resumed"] is True


def test_a_retry_takes_paid_answers_from_the_journal(world: World) -> None:
    """An attempt that failed after an answer was paid: the retry reuses the journaled answer
    and calls nothing (the sidecar marks the chunk as from the journal)."""
    world.transcriber.fail_after_paying = TransientApiError("connection dropped")
    job = world.claim("a.wav")
    assert world.run(job).outcome == "retry"
    again = world.ledger.claim(world.job(job.id).next_attempt_at + 1)
    assert again is not None
    assert world.run(again).outcome == "done"
    assert world.transcriber.paid == 1
    (chunk,) = world.sidecar("a")["chunks"]
    assert chunk["from_journal"] is True and chunk["attempts"] == 0


def test_the_job_uses_the_settings_it_was_given(world: World, tmp_path: Path) -> None:
    """Everything a job decides comes from its own context: a context with another watch and
    another duplicate policy is obeyed, whatever else exists."""
    elsewhere = WatchSettings(path=world.inbox, processed_dir=tmp_path / "elsewhere",
                              failed_dir=world.failed)
    world.run(world.claim("a.wav"))
    job = world.claim("copy.wav")
    ctx = world.context(Settings(**{**world.settings.__dict__, "on_duplicate": "transcribe"}))
    ctx = JobContext(**{**ctx.__dict__, "watch": elsewhere})
    assert JobRunner(ctx).run(job).outcome == "done"
    assert (tmp_path / "elsewhere" / "copy.json").exists() and world.transcriber.paid == 2


def test_every_line_of_a_job_names_its_file(world: World, emulator: Emulator,
                                            logs: list[dict[str, Any]]) -> None:
    """The job's path and id are bound for the whole job: the client's api.retry line, logged
    in a chunk thread, names the file (issue 11 item 16)."""
    emulator.add_fault(FaultRule("500", times=1))
    api = default_api_settings(base_url=emulator.url, backoff_initial_seconds=0.01,
                               backoff_max_seconds=0.01)
    client = MimoClient(api, Secret("sk-jobs-test-key-0123"))
    ctx = world.context()
    ctx = JobContext(**{**ctx.__dict__,
                        "transcriber": ClientTranscriber(client, default_audio_settings())})
    job = world.claim("t.wav", tones.to_bytes(["alpha", "zulu"], "wav"))
    try:
        assert JobRunner(ctx).run(job).outcome == "done"
    finally:
        client.close()
    assert world.sidecar("t")["transcript"] == "alpha zulu."
    (retry,) = lines(logs, "api.retry")
    assert (retry["path"], retry["job"]) == (job.path, job.id)
