"""The MiMo ASR API emulator and its tone test vocabulary.

``Emulator`` is a real HTTP server on loopback that reproduces the contract of
``mimo-api.md`` (strict validation, exact bodies, SSE, limits, latency, injectable faults);
``tones`` makes test audio whose transcript the emulator can name.
"""

from mimo_watchd.emulator import tones
from mimo_watchd.emulator.faults import FAULT_KINDS, FaultRule
from mimo_watchd.emulator.records import CallRecord, EmulatorConfig
from mimo_watchd.emulator.server import Emulator

__all__ = ["FAULT_KINDS", "CallRecord", "Emulator", "EmulatorConfig", "FaultRule", "tones"]
