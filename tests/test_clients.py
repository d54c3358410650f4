"""A client replaced by a reload is closed once the jobs using it end, and never before."""

from __future__ import annotations

from mimo_watchd.clients import Clients


class FakeClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_replaced_client_closes_when_its_last_job_ends() -> None:
    """A job keeps the client it started with across a reload; the old client is closed when
    the last such job releases it, and new jobs get the new client."""
    old, new = FakeClient("old"), FakeClient("new")
    pool = Clients(old)
    first, second = pool.acquire(), pool.acquire()
    pool.replace(new)
    assert pool.acquire() is new and not old.closed
    pool.release(first)
    assert not old.closed
    pool.release(second)
    assert old.closed and not new.closed


def test_reloads_leave_no_client_behind() -> None:
    """A client no job uses is closed at once when replaced; close() closes what is left."""
    made = [FakeClient(str(i)) for i in range(5)]
    pool = Clients(made[0])
    for client in made[1:]:
        pool.replace(client)
    assert [c.closed for c in made] == [True, True, True, True, False]
    held = pool.acquire()
    pool.replace(FakeClient("last"))
    pool.close()
    assert held.closed and pool.current.closed
