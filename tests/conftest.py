"""Shared fixtures: a running MiMo API emulator on loopback (answers at once: latency 0), and
a PostgreSQL server for the fleet ledger."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mimo_watchd.emulator import Emulator, EmulatorConfig
from tests import pgserver


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A started emulator with default limits and no latency; stopped after the test."""
    with Emulator(EmulatorConfig(latency_scale=0)) as emu:
        yield emu


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """An emulator with no latency and no account limits, for daemon-level tests."""
    with Emulator(EmulatorConfig(latency_scale=0.0, rpm=None, tpm=None)) as emu:
        yield emu


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """A factory of started emulators: ``make_emulator(rpm=2, ...)`` overrides EmulatorConfig
    fields (latency 0 unless given); all are stopped after the test."""
    started: list[Emulator] = []

    def make(**overrides: Any) -> Emulator:
        emu = Emulator(EmulatorConfig(**{"latency_scale": 0.0, **overrides})).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The DSN of a PostgreSQL server for the whole session: ``MIMO_WATCHD_TEST_DSN``, or a
    throwaway server started from Debian's binaries; skips (saying why) without either."""
    pytest.importorskip("psycopg", reason="the [postgres] extra (psycopg) is not installed")
    given = os.environ.get(pgserver.TEST_DSN_ENV)
    if given:
        yield given
        return
    bin_dir = pgserver.binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (apt install postgresql) and no "
                    f"{pgserver.TEST_DSN_ENV}")
    server = pgserver.PgServer(bin_dir)
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(pg_server: str) -> str:
    """A DSN whose search path is a new, empty schema: a fleet database of this test's own."""
    return pgserver.isolated_dsn(pg_server)
