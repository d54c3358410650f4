"""The fleet ledger on a real PostgreSQL server, in-process: several ledgers with their own
``host_id`` are several hosts. Claims, fences, takeover, the shared journal, the schema."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mimo_watchd.config import LedgerSettings, Secret
from mimo_watchd.errors import ConfigError, LeaseLostError, LedgerError
from mimo_watchd.ledger import Ledger, State, open_ledger

psycopg = pytest.importorskip("psycopg", reason="the [postgres] extra is not installed")

from mimo_watchd.ledger.pgschema import SCHEMA_VERSION  # noqa: E402
from mimo_watchd.ledger.postgres import PostgresLedger  # noqa: E402


def host(dsn: str, name: str, tmp_path: Path, lease: float = 30.0) -> PostgresLedger:
    return PostgresLedger(Secret(dsn), host_id=name, lease_seconds=lease,
                          state_dir=tmp_path / name)


def queue(ledger: Ledger, path: str = "/in/a.wav", sha: str = "c1") -> int:
    return ledger.enqueue(watch="/in", path=path, size=10, mtime_ns=5, sha256=sha,
                          arrived_at="t").id


def expire_claims(dsn: str) -> None:
    """What a holder frozen past its lease looks like to the others: its claims expired."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("UPDATE mw_claims SET expires_at = clock_timestamp() - interval '1 second'")


@pytest.fixture
def fleet(pg_dsn: str, tmp_path: Path) -> Any:
    made: list[PostgresLedger] = []

    def make(name: str, lease: float = 30.0) -> PostgresLedger:
        made.append(host(pg_dsn, name, tmp_path, lease))
        return made[-1]

    yield make
    for ledger in made:
        ledger.close()


def test_the_schema_is_created_versioned_and_a_newer_one_refused(pg_dsn: str,
                                                                   tmp_path: Path) -> None:
    """A new database gets the tables and its version; one written by a newer version is
    refused with a LedgerError saying so."""
    host(pg_dsn, "a", tmp_path).close()
    host(pg_dsn, "b", tmp_path).close()  # a second opening migrates nothing
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        (version,) = db.execute("SELECT value FROM mw_meta WHERE key='schema_version'").fetchone()
        assert int(version) == SCHEMA_VERSION
        db.execute("UPDATE mw_meta SET value = %s WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))
    with pytest.raises(LedgerError, match="newer"):
        host(pg_dsn, "c", tmp_path)


def test_a_shared_file_is_one_job_seen_by_each_host_that_sees_it(fleet: Any) -> None:
    """Two hosts queueing the same file (a shared inbox) make one job both may run; a file
    only one host saw is never claimed by another."""
    a, b, c = fleet("a"), fleet("b"), fleet("c")
    shared = queue(a)
    assert b.active_for_path("/in/a.wav") is None  # b has not seen it yet
    assert queue(b) == shared
    own = queue(c, "/in/c.wav", "c2")
    assert b.claim() is not None and b.claim() is None  # the shared one; never c's
    assert [j.id for j in c.jobs()] == [own]
    assert c.claim() is not None


def test_inboxes_of_their_own_under_one_path_keep_their_own_jobs(fleet: Any) -> None:
    """Two hosts whose own inboxes have the same path, with other files under one name: each
    file gets a job of its own, run by its own host; a queued file that changed keeps its
    job."""
    a, b = fleet("a"), fleet("b")
    mine = queue(a, "/in/x.wav", "from-a")
    theirs = queue(b, "/in/x.wav", "from-b")
    assert mine != theirs
    assert [j.sha256 for j in a.jobs()] == ["from-a"]
    assert [j.sha256 for j in b.jobs()] == ["from-b"]
    assert queue(a, "/in/x.wav", "from-a-rewritten") == mine
    assert [j.sha256 for j in b.jobs()] == ["from-b"]
    taken = b.claim()
    assert taken is not None and taken.id == theirs and b.claim() is None


def test_a_content_is_held_by_one_process_at_a_time(fleet: Any) -> None:
    """While one host holds a content, no other process takes any job of that content."""
    a, b = fleet("a"), fleet("b")
    first = queue(a, "/in/x.wav", "same")
    queue(b, "/in/x.wav", "same")
    copy = queue(b, "/in/copy-of-x.wav", "same")
    job = a.claim()
    assert job is not None and job.id == first
    assert b.claim() is None
    a.finish(first, State.DONE, final_path="/out/x.wav", outcome="done")
    taken = b.claim()
    assert taken is not None and taken.id == copy


def test_a_lost_lease_stops_its_holder_and_the_next_holder_reuses_what_was_paid(
        fleet: Any, pg_dsn: str) -> None:
    """Takeover only after the lease expired; then the old holder can neither record a plan,
    finish, nor requeue, but the answer it was paid for still lands in the shared journal
    and the new holder finds it."""
    a, b = fleet("a"), fleet("b")
    job_id = queue(a)
    queue(b)
    assert a.claim() is not None
    assert b.claim() is None  # the lease is live
    expire_claims(pg_dsn)
    taken = b.claim()
    assert taken is not None and taken.id == job_id and taken.interruptions == 1
    with pytest.raises(LeaseLostError):
        a.ensure_held(job_id, 30.0)
    a.record_response(sha256="c1", variant="m|auto", span="0-1", job_id=job_id,
                      raw={"id": "paid"})
    with pytest.raises(LeaseLostError):
        a.set_plan(job_id, {"p": 1}, {"r": 1})
    with pytest.raises(LeaseLostError):
        a.finish(job_id, State.DONE, final_path="/out/a.wav", outcome="done")
    a.requeue(job_id, error="late")  # not its job any more: nothing happens
    assert b.lookup_response(sha256="c1", variant="m|auto", span="0-1") == {"id": "paid"}
    b.set_plan(job_id, {"p": 2}, {"r": 2})
    b.finish(job_id, State.DONE, final_path="/out/a.wav", outcome="done")
    done = b.jobs(State.DONE)
    assert [(j.id, j.plan) for j in done] == [(job_id, {"p": 2})]


def test_the_fence_grows_with_every_holder(fleet: Any, pg_dsn: str) -> None:
    """Each new holder of a content gets a larger fencing number than the last."""
    hosts = [fleet(n) for n in "abc"]
    for ledger in hosts:
        queue(ledger)
    fences = []
    for ledger in hosts:
        job = ledger.claim()
        assert job is not None
        held = ledger.held.get(job.id)
        assert held is not None
        fences.append(held.fence)
        expire_claims(pg_dsn)
    assert fences == sorted(fences) and len(set(fences)) == 3


def test_a_request_is_covered_by_the_lease_before_it_is_sent(fleet: Any, pg_dsn: str) -> None:
    """``ensure_held(job, seconds)`` extends the lease past the request's whole deadline."""
    a = fleet("a", lease=10.0)
    job_id = queue(a)
    assert a.claim() is not None
    a.ensure_held(job_id, 300.0)
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        (left,) = db.execute("SELECT extract(epoch from expires_at - clock_timestamp()) "
                             "FROM mw_claims").fetchone()
    assert 300 < float(left) <= 311


def test_the_keeper_renews_a_held_claim(fleet: Any, pg_dsn: str) -> None:
    """A claim held longer than its lease stays held: the keeper renews it at a third."""
    a, b = fleet("a", lease=1.5), fleet("b")
    job_id = queue(a)
    queue(b)
    assert a.claim() is not None
    time.sleep(2.5)
    assert b.claim() is None
    a.ensure_held(job_id)


def test_restarting_releases_this_hosts_old_claims_and_no_one_elses(
        fleet: Any, tmp_path: Path) -> None:
    """At start, the jobs a previous life of this host left running go back to the queue
    (one interruption more) with their claims released at once; another host's stay."""
    old, other = fleet("a"), fleet("b")
    mine = queue(old)
    theirs = queue(other, "/in/b.wav", "c2")
    assert old.claim() is not None and other.claim() is not None
    new = fleet("a")  # the same host after a kill -9 (same state folder)
    new.state_dir = old.state_dir
    assert new.recover(unclean=True) == 1
    again = new.claim()
    assert again is not None and again.id == mine and again.interruptions == 1
    assert other.get(theirs).state == State.PROCESSING  # type: ignore[union-attr]


def test_a_host_id_in_use_by_a_live_daemon_elsewhere_is_refused(fleet: Any) -> None:
    """Two live daemons (different state folders) with one host_id: the second is refused."""
    fleet("a").recover(unclean=True)
    second = fleet("a")
    second.state_dir = second.state_dir.with_name("elsewhere")
    with pytest.raises(LedgerError, match="host_id 'a' is in use"):
        second.recover(unclean=True)


def test_a_file_another_host_finished_is_taken_elsewhere(fleet: Any) -> None:
    """A second job for a file another host already finished finds that job."""
    a, b = fleet("a"), fleet("b")
    first = queue(a)
    assert a.claim() is not None
    a.finish(first, State.DONE, final_path="/out/a.wav", outcome="done")
    late = b.enqueue(watch="/in", path="/in/a.wav", size=10, mtime_ns=5, sha256="c1",
                     arrived_at="t")
    assert late.id != first
    found = b.taken_elsewhere(late)
    assert found is not None and found.id == first and found.final_path == "/out/a.wav"


def test_the_fleet_shows_hosts_their_jobs_and_the_shared_queue(fleet: Any) -> None:
    """``fleet()`` lists every daemon, what it runs now, and the queue of all hosts."""
    a, b = fleet("a"), fleet("b")
    a.recover(unclean=True)
    b.recover(unclean=True)
    queue(a)
    queue(b, "/in/b.wav", "c2")
    queue(b, "/in/c.wav", "c3")
    assert a.claim() is not None
    doc = a.fleet()
    assert doc is not None
    assert [(h["host_id"], h["alive"], h["in_flight"]) for h in doc["hosts"]] == [
        ("a", True, ["/in/a.wav"]), ("b", True, [])]
    assert (doc["queued"], doc["in_progress"]) == (2, 1)
    b.recover(unclean=False)
    assert [h["alive"] for h in a.fleet()["hosts"]] == [True, False]  # type: ignore[index]


def test_a_path_that_is_not_utf8_round_trips(fleet: Any) -> None:
    """A name that is not UTF-8 is stored as its bytes and given back as the same str."""
    a = fleet("a")
    name = os.fsdecode(b"/in/caf\xe9.wav")
    job = a.enqueue(watch="/in", path=name, size=1, mtime_ns=1, sha256="s", arrived_at="t")
    assert a.active_for_path(name) == job
    claimed = a.claim()
    assert claimed is not None and claimed.path == name
    a.finish(job.id, State.FAILED, final_path=name, outcome="failed",
             error=f"cannot read {name}")
    assert a.jobs(State.FAILED)[0].final_path == name


def test_threads_of_three_hosts_run_each_job_once_and_each_content_alone(fleet: Any) -> None:
    """Three hosts with four workers each drain a shared queue of copies: every job runs
    exactly once, and never two jobs of one content at the same moment."""
    hosts = [fleet(n) for n in "abc"]
    paths = [f"/in/f{i}.wav" for i in range(60)]
    for i, path in enumerate(paths):
        for ledger in hosts:
            queue(ledger, path, f"c{i % 20}")
    ran: Counter[int] = Counter()
    running: set[str] = set()
    clash: list[str] = []
    lock = threading.Lock()

    def worker(ledger: PostgresLedger) -> None:
        while True:
            job = ledger.claim()
            if job is None:
                if not ledger.counts()["QUEUED"]:
                    return
                time.sleep(0.01)
                continue
            with lock:
                if job.sha256 in running:
                    clash.append(job.sha256)
                running.add(job.sha256)
                ran[job.id] += 1
            time.sleep(0.002)
            with lock:
                running.discard(job.sha256)
            ledger.finish(job.id, State.DONE, final_path=job.path, outcome="done")

    threads = [threading.Thread(target=worker, args=(ledger,)) for ledger in hosts
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not clash
    assert len(ran) == len(paths) and set(ran.values()) == {1}


def test_the_dsn_never_shows_in_an_error(pg_server: str, tmp_path: Path) -> None:
    """A connection that fails names neither the DSN nor its password."""
    dsn = "host=/nonexistent-socket-dir user=mw password=hunter2-secret-pw dbname=x"
    with pytest.raises(LedgerError) as info:
        PostgresLedger(Secret(dsn), host_id="a", lease_seconds=30, state_dir=tmp_path)
    assert "hunter2-secret-pw" not in str(info.value)


def test_open_ledger_chooses_postgres_from_the_settings(pg_dsn: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``ledger.backend: postgres`` opens the fleet ledger with the DSN from its variable."""
    monkeypatch.setenv("FLEET_DSN", pg_dsn)
    ledger = open_ledger(tmp_path, LedgerSettings(backend="postgres", dsn_env="FLEET_DSN",
                                                  host_id="h1"))
    try:
        assert isinstance(ledger, PostgresLedger) and ledger.host == "h1"
    finally:
        ledger.close()


def test_without_psycopg_the_error_names_the_extra(tmp_path: Path) -> None:
    """Without psycopg installed, choosing postgres is a ConfigError naming the extra."""
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from pathlib import Path\n"
            "from mimo_watchd.config import LedgerSettings\n"
            "from mimo_watchd.errors import ConfigError\n"
            "from mimo_watchd.ledger import open_ledger\n"
            "try:\n"
            f"    open_ledger(Path({str(tmp_path)!r}), LedgerSettings(backend='postgres'))\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    assert "pip install 'mimo-watchd[postgres]'" in out
    assert isinstance(ConfigError([]), Exception)


def test_the_bill_is_the_accounts_every_hosts_answers_in_it(fleet: Any) -> None:
    """``billed`` sums the billed seconds of every host's journaled answers in the period and
    counts those that do not say."""
    a, b = fleet("a"), fleet("b")
    start = time.time() - 1
    a.record_response(sha256="c1", variant="v", span="0", job_id=1,
                      raw={"usage": {"seconds": 4}})
    b.record_response(sha256="c2", variant="v", span="0", job_id=2,
                      raw={"usage": {"seconds": 2.5}})
    b.record_response(sha256="c3", variant="v", span="0", job_id=3, raw={"usage": {}})
    bill = a.billed(start, time.time() + 60)
    assert (bill.seconds, bill.answers, bill.unknown) == (6.5, 3, 1)
    assert a.billed(start - 100, start).answers == 0
