"""Shared fixtures: a running MiMo API emulator on loopback (answers at once: latency 0)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mimo_watchd.emulator import Emulator, EmulatorConfig


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
