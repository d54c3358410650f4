"""Answers the client must not take at face value, through the real emulator over HTTP into a
real SQLite journal (issue 13 items 2-4): error bodies inside HTTP 200, looping output, and
usage that is missing or odd."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mimo_watchd.billing import Bill
from mimo_watchd.client import MimoClient
from mimo_watchd.config import Secret, default_api_settings, default_audio_settings
from mimo_watchd.emulator import Emulator, FaultRule
from mimo_watchd.errors import OperatorError
from mimo_watchd.jobs import _JobJournal
from mimo_watchd.ledger import Billed, SqliteLedger
from mimo_watchd.transcription import FileTranscriber, TranscriptResult
from tests.test_long import as_words, word_sequence, write_long

VARIANT = "mimo-v2.5-asr|auto"


@dataclass
class Setup:
    """One file's transcription as a daemon job runs it: the client, and the job's journal in a
    real ledger with the day's bill counting every journaled answer."""

    emu: Emulator
    client: MimoClient
    ledger: SqliteLedger
    bill: Bill
    journal: _JobJournal

    def run(self, path: Path) -> TranscriptResult:
        return FileTranscriber(self.client, default_audio_settings(), language="auto",
                               journal=self.journal).run(path)

    def journaled(self) -> Billed:
        """What the ledger's journal holds: answers, billed seconds, answers without seconds."""
        return self.ledger.billed(0.0, 2**40)


@pytest.fixture
def setup(emu: Emulator, tmp_path: Path) -> Iterator[Setup]:
    api = default_api_settings(base_url=emu.url, requests_per_minute=100_000,
                               tokens_per_minute=100_000_000, backoff_initial_seconds=0.01,
                               backoff_max_seconds=0.05, max_retries=3)
    client = MimoClient(api, Secret("sk-answers-test"))
    ledger = SqliteLedger(tmp_path / "state")
    job = ledger.enqueue(watch="inbox", path=str(tmp_path / "a.wav"), size=1, mtime_ns=1,
                         sha256="ab" * 32, arrived_at="2026-12-01T00:00:00Z")
    bill = Bill(None)
    journal = _JobJournal(ledger, job, VARIANT, own_only=True, bill=bill, api=api)
    try:
        yield Setup(emu, client, ledger, bill, journal)
    finally:
        client.close()
        ledger.close()


def tone_file(path: Path, count: int, seed: int, marker: int | None = None
              ) -> tuple[Path, list[str]]:
    """``count`` tone words with pauses (0.5 s each), as a wav: its transcript is the words;
    word ``marker`` is "scarlet", which occurs nowhere else."""
    words = word_sequence(count, seed=seed)
    if marker is not None:
        words[marker] = "scarlet"
    return write_long(path, words, gapless=False, word_seconds=0.3, fmt="wav"), words


@pytest.mark.parametrize("kind", ["200-500", "200-429"])
def test_an_error_body_in_a_200_is_retried_and_never_journaled(setup: Setup, tmp_path: Path,
                                                               kind: str) -> None:
    """An HTTP 200 whose body is a 500 or 429 error is retried like that status (a 429 holds
    the client for a second first), and only the one billed answer that follows is journaled
    and counted in the bill."""
    path, words = tone_file(tmp_path / "a.wav", 8, seed=21)
    setup.emu.add_fault(FaultRule(kind))
    result = setup.run(path)
    assert as_words(result.text) == words
    (chunk,) = result.chunks
    assert chunk.attempts == 2 and len(setup.emu.calls) == 2
    (billed,) = setup.emu.billed_calls()
    refused, _ = setup.emu.calls
    assert refused.fault == kind and not refused.billed
    if kind == "200-429":
        assert billed.time - refused.time >= 0.9, "a 429 slows the client down"
    assert chunk.request_id == billed.request_id
    seconds = (billed.usage or {})["seconds"]
    assert setup.journaled() == Billed(seconds=seconds, answers=1, unknown=0)
    assert (setup.bill.seconds, setup.bill.unknown) == (seconds, 0)


@pytest.mark.parametrize("kind", ["200-401", "200-402"])
def test_an_operator_error_in_a_200_stops_the_file_and_nothing_is_journaled(
        setup: Setup, tmp_path: Path, kind: str) -> None:
    """An HTTP 200 whose body is a 401 or 402 error is an OperatorError (the daemon pauses),
    sent once, and neither the journal nor the bill holds an answer for it."""
    path, _ = tone_file(tmp_path / "a.wav", 8, seed=22)
    setup.emu.add_fault(FaultRule(kind, times=5))
    with pytest.raises(OperatorError) as caught:
        setup.run(path)
    assert caught.value.status == int(kind[4:]) and "HTTP 200 with an error body" in str(
        caught.value)
    assert len(setup.emu.calls) == 1 and not setup.emu.billed_calls()
    assert setup.journaled() == Billed(seconds=0, answers=0, unknown=0)
    assert (setup.bill.seconds, setup.bill.unknown) == (0, 0)


@pytest.mark.parametrize("kind", ["looping", "repetition_truncation"])
def test_a_looping_answer_is_re_split_and_its_price_kept(setup: Setup, tmp_path: Path,
                                                         kind: str) -> None:
    """A 20-s clip answered with one phrase looped (or finish_reason repetition_truncation) is
    halved and sent again: the transcript has the real words, every chunk says why, the first
    keeps the paid discarded answer, and every billed call is journaled and counted once."""
    path, words = tone_file(tmp_path / "a.wav", 40, seed=23)
    setup.emu.add_fault(FaultRule(kind))
    result = setup.run(path)
    assert as_words(result.text) == words
    assert len(result.chunks) >= 2 and all(c.resplit == (kind,) for c in result.chunks)
    (lost,) = result.chunks[0].discarded
    first = setup.emu.calls[0]
    assert first.fault == kind and first.billed and lost.request_id == first.request_id
    assert lost.reason == kind and lost.usage == first.usage and (lost.start, lost.end) == (
        result.chunks[0].start, result.chunks[-1].end)
    assert not any(c.discarded for c in result.chunks[1:])
    billed = setup.emu.billed_calls()
    assert len(billed) == len(setup.emu.calls) == 1 + len(result.chunks) == result.api_calls
    seconds = sum((c.usage or {})["seconds"] for c in billed)
    assert result.usage["seconds"] == seconds and result.usage["complete"] is True
    assert setup.journaled() == Billed(seconds=seconds, answers=len(billed), unknown=0)
    again = setup.run(path)
    assert len(setup.emu.calls) == len(billed), "a journaled re-split is never paid again"
    assert again.text == result.text and all(c.from_journal for c in again.chunks)
    assert [c.resplit for c in again.chunks] == [c.resplit for c in result.chunks]


@pytest.mark.parametrize("kind", ["no-usage", "no-seconds"])
def test_an_answer_without_seconds_is_kept_and_its_usage_unknown(setup: Setup, tmp_path: Path,
                                                                 kind: str) -> None:
    """An answer without usage, or whose usage lacks seconds, is the transcript; the file's
    seconds are unknown (None, not 0) and its usage says it is incomplete."""
    path, words = tone_file(tmp_path / "a.wav", 8, seed=24)
    setup.emu.add_fault(FaultRule(kind))
    result = setup.run(path)
    assert as_words(result.text) == words
    (call,) = setup.emu.calls
    assert call.fault == kind and call.billed
    assert result.usage["seconds"] is None and result.usage["complete"] is False
    if kind == "no-usage":
        assert result.usage["total_tokens"] is None and result.chunks[0].usage == {}
    else:
        assert call.usage is not None and result.usage["total_tokens"] == call.usage[
            "total_tokens"]
    assert setup.journaled() == Billed(seconds=0, answers=1, unknown=1)
    assert (setup.bill.seconds, setup.bill.unknown) == (0, 1)


def test_float_seconds_are_kept_as_sent(setup: Setup, tmp_path: Path) -> None:
    """A float ``usage.seconds`` (4.6) is kept as the float sent, in the file's usage and in
    the bill, and the usage is complete."""
    path, words = tone_file(tmp_path / "a.wav", 9, seed=25)
    setup.emu.add_fault(FaultRule("float-seconds"))
    result = setup.run(path)
    assert as_words(result.text) == words
    (call,) = setup.emu.calls
    assert call.usage is not None
    sent = call.usage["seconds"]
    assert isinstance(sent, float) and sent != int(sent)
    assert result.usage["seconds"] == sent and isinstance(result.usage["seconds"], float)
    assert result.usage["complete"] is True
    assert setup.journaled() == Billed(seconds=sent, answers=1, unknown=0)
    assert setup.bill.seconds == sent


def test_one_clip_without_usage_leaves_the_others_counted(setup: Setup, tmp_path: Path) -> None:
    """In a file of several clips, one answer without usage leaves the others' seconds summed
    as sent and marks the total incomplete."""
    path, words = tone_file(tmp_path / "a.wav", 240, seed=26, marker=120)
    setup.emu.add_fault(FaultRule("no-usage", when_word="scarlet"))
    result = setup.run(path)
    assert as_words(result.text) == words and len(result.chunks) >= 2
    calls = setup.emu.calls
    assert sum(c.fault == "no-usage" for c in calls) == 1 and len(calls) == len(result.chunks)
    known = sum(c.usage["seconds"] for c in calls if c.usage is not None)
    assert result.usage["seconds"] == known and result.usage["complete"] is False
    assert setup.journaled() == Billed(seconds=known, answers=len(calls), unknown=1)
