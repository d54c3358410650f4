"""Jobs of a fleet, in-process: real folders, the real job runner, a real PostgreSQL ledger per
"host" (``host_id``), a fake transcriber that checks the claim before it "sends" as the client
does. A lost claim stops a job; a takeover reuses what was paid; another host's file is no
failure here."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd import claimguard
from mimo_watchd.config import Secret
from mimo_watchd.inputs import InputFile
from mimo_watchd.jobs import Outcome
from mimo_watchd.ledger import Job, State
from mimo_watchd.transcription import Journal, TranscriptResult
from tests.test_jobs import FakeTranscriber, World

psycopg = pytest.importorskip("psycopg", reason="the [postgres] extra is not installed")

from mimo_watchd.ledger.postgres import PostgresLedger  # noqa: E402


class SendingTranscriber(FakeTranscriber):
    """The fake transcriber, checking the claim before each "request" as the client does
    (``claimguard.before_send``); ``before_send`` runs first (a test's freeze)."""

    def __init__(self) -> None:
        super().__init__()
        self.before_send: Any = None
        self.after_paying: Any = None

    def transcribe(self, source: InputFile, *, sha256: str, language: str, journal: Journal,
                   on_chunk: Any, subtitles: bool = False) -> TranscriptResult:
        if self.before_send is not None:
            self.before_send()
        if journal.lookup("0.000-1.000") is None:
            claimguard.before_send(30.0)
        result = super().transcribe(source, sha256=sha256, language=language, journal=journal,
                                    on_chunk=on_chunk, subtitles=subtitles)
        if self.after_paying is not None:
            self.after_paying()
        return result


def expire_claims(dsn: str) -> None:
    """What a holder frozen past its lease looks like to the others: its claims expired."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("UPDATE mw_claims SET expires_at = clock_timestamp() - interval '1 second'")


class Host:
    """One host of the fleet over a shared inbox: its own ledger (host_id) and transcriber."""

    def __init__(self, world: World, dsn: str, name: str) -> None:
        self.world = world
        self.ledger = PostgresLedger(Secret(dsn), host_id=name, lease_seconds=30.0,
                                     state_dir=world.settings.state_dir / name)
        self.transcriber = SendingTranscriber()

    def queue(self, path: Path) -> Job:
        content = path.read_bytes()
        st = path.stat()
        return self.ledger.enqueue(watch=str(self.world.inbox), path=str(path),
                                   size=st.st_size, mtime_ns=st.st_mtime_ns,
                                   sha256=hashlib.sha256(content).hexdigest(), arrived_at="t0")

    def run(self, job: Job) -> Outcome:
        self.world.ledger, self.world.transcriber = self.ledger, self.transcriber  # type: ignore[assignment]
        return self.world.run(job)


@pytest.fixture
def hosts(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[World, Host, Host]]:
    world = World(tmp_path)
    sqlite = world.ledger
    a, b = Host(world, pg_dsn, "a"), Host(world, pg_dsn, "b")
    yield world, a, b
    for ledger in (a.ledger, b.ledger, sqlite):
        ledger.close()


def outputs(world: World) -> list[str]:
    return sorted(p.name for p in world.processed.rglob("*") if p.is_file())


def test_a_job_whose_claim_was_lost_sends_nothing_and_writes_nothing(
        hosts: tuple[World, Host, Host], pg_dsn: str) -> None:
    """A host frozen past its lease wakes up: its job ends ``lost`` before anything is sent
    or written; the host that took it over transcribes and places it once."""
    world, a, b = hosts
    path = world.arrive("call.wav")
    job = a.queue(path)
    b.queue(path)
    assert a.ledger.claim() is not None
    expire_claims(pg_dsn)  # a froze
    taken = b.ledger.claim()
    assert taken is not None and taken.id == job.id
    assert a.run(job).outcome == "lost"
    assert a.transcriber.paid == 0 and outputs(world) == [] and path.exists()
    assert b.run(taken).outcome == "done"
    assert outputs(world) == ["call.json", "call.txt", "call.wav"]
    assert b.transcriber.paid == 1


def test_a_takeover_reuses_the_answer_the_lost_holder_paid_for(
        hosts: tuple[World, Host, Host], pg_dsn: str) -> None:
    """The holder pays and journals, then loses its claim before it records the plan: it
    writes nothing, and the next holder uses the journaled answer instead of paying again."""
    world, a, b = hosts
    path = world.arrive("call.wav")
    job = a.queue(path)
    b.queue(path)
    assert a.ledger.claim() is not None
    a.transcriber.after_paying = lambda: expire_claims(pg_dsn)
    assert a.run(job).outcome == "lost"
    assert outputs(world) == []
    taken = b.ledger.claim()
    assert taken is not None and taken.interruptions == 1
    assert b.run(taken).outcome == "done"
    assert (a.transcriber.paid, b.transcriber.paid) == (1, 0)
    assert world.sidecar("call")["chunks"][0]["from_journal"] is True


def test_a_file_another_host_moved_is_not_a_failure_here(
        hosts: tuple[World, Host, Host]) -> None:
    """A host that queued a file another host has just finished ends its job ``elsewhere``
    (DONE, pointing at where the file went), with nothing in the failed folder."""
    world, a, b = hosts
    path = world.arrive("call.wav")
    first = a.queue(path)
    late = b.queue(path)
    assert late.id == first.id  # one job while both see it
    claimed = a.ledger.claim()
    assert claimed is not None and a.run(claimed).outcome == "done"
    world.arrive("call.wav")  # b's settler saw it before a moved it: b queues it again...
    again = b.queue(path)
    path.unlink()  # ...and a moved it meanwhile
    assert again.id != first.id
    assert b.ledger.claim() is not None
    assert b.run(again) == Outcome(again.id, "elsewhere")
    done = b.ledger.get(again.id)
    assert done is not None and done.state == State.DONE
    assert done.final_path == str(world.processed / "call.wav")
    assert b.ledger.counts()["DONE"] == 1  # the file, once
    assert not world.failed.exists() or not any(world.failed.iterdir())


def test_the_client_sends_nothing_for_a_job_it_no_longer_holds(emulator: Any,
                                                                 tmp_path: Path) -> None:
    """The real client asks the job's claim check before each request, with the request's
    whole deadline: a lost claim sends nothing; a held one is asked to cover the deadline."""
    from mimo_watchd.client import MimoClient
    from mimo_watchd.config import default_api_settings
    from mimo_watchd.emulator import tones
    from mimo_watchd.errors import LeaseLostError

    tones.write(tmp_path / "a.wav", ["alpha", "bravo"], "wav")
    audio = (tmp_path / "a.wav").read_bytes()
    client = MimoClient(default_api_settings(base_url=emulator.url), Secret("sk-test-key-123"))

    def lost(seconds: float) -> None:
        raise LeaseLostError("another host holds it now")

    try:
        with claimguard.bound(lost), pytest.raises(LeaseLostError):
            client.transcribe(audio, "audio/wav", 1.0)
        assert emulator.calls == []
        asked: list[float] = []
        with claimguard.bound(asked.append):
            client.transcribe(audio, "audio/wav", 1.0)
    finally:
        client.close()
    assert len(emulator.calls) == 1
    assert len(asked) == 1 and asked[0] > 30.0  # connect + write + read timeouts
