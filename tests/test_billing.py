"""The bill (issue 16 item 4): cost per file, days in the operator's zone, the ledger's bill of
a period, the daily budget's pause, and what a job says about its cost."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mimo_watchd import billing, days
from mimo_watchd.billing import Bill, Cost, Price
from mimo_watchd.config import ApiSettings, Settings, default_api_settings, parse
from mimo_watchd.errors import BudgetReachedError, ConfigError, LedgerError
from mimo_watchd.jobs import JobContext, JobRunner, _JobJournal
from mimo_watchd.ledger import SqliteLedger
from mimo_watchd.pausegate import PauseGate
from tests.test_jobs import USAGE, World, lines, logs, world  # noqa: F401 (fixtures)

YUAN = Price(0.5, "CNY")


def test_a_files_cost_is_its_billed_seconds_at_the_price() -> None:
    """313 billed seconds at 0.5 per hour; an answer without usage makes the cost a lower
    bound that says so; none with usage: the amount is unknown, not 0."""
    whole = Cost.of([{"seconds": 300}, {"seconds": 13}], YUAN)
    assert (whole.amount, whole.billed_seconds, whole.complete) == (0.043472, 313, True)
    assert whole.text() == "0.0435 CNY"
    part = Cost.of([{"seconds": 300}, {}], YUAN)
    assert (part.amount, part.complete) == (0.041667, False)
    assert part.text().startswith("at least 0.0417 CNY")
    none = Cost.of([{"prompt_tokens": 3}, {"seconds": None}], YUAN)
    assert (none.amount, none.billed_seconds, none.complete) == (None, None, False)
    assert Cost.from_json(whole.to_json()) == whole


def test_days_follow_the_calendar_of_the_zone() -> None:
    """The day that loses an hour in Berlin is 23 hours long; a month begins on its first."""
    berlin = ZoneInfo("Europe/Berlin")
    noon = datetime(2026, 3, 29, 12, tzinfo=berlin).timestamp()
    assert days.next_day(noon, berlin) - days.day_start(noon, berlin) == 23 * 3600
    assert days.local(days.month_start(noon, berlin), berlin) == datetime(2026, 3, 1,
                                                                          tzinfo=berlin)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        days.zone("Mars/Olympus")


def test_an_unknown_zone_is_a_config_error(tmp_path: Path) -> None:
    """timezone must name a zone of the system's tzdata."""
    doc = {"timezone": "Nowhere/City", "watches": [
        {"path": str(tmp_path), "processed_dir": str(tmp_path.parent / "p"),
         "failed_dir": str(tmp_path.parent / "f")}]}
    with pytest.raises(ConfigError, match="timezone: unknown time zone 'Nowhere/City'"):
        parse(doc, base=tmp_path)


def test_the_ledger_bills_the_answers_journaled_in_a_period(tmp_path: Path) -> None:
    """Every journaled answer counts (whichever job, whatever became of it); one without
    usage.seconds is counted as unknown, not as 0 s."""
    ledger = SqliteLedger(tmp_path)
    try:
        for span, usage in (("a", {"seconds": 4}), ("b", {}), ("c", {"seconds": 2.5})):
            ledger.record_response(sha256="s", variant="v", span=span, job_id=1,
                                   raw={"usage": usage})
        now = time.time()
        assert ledger.billed(now - 60, now + 1) == billing.Billed(6.5, 3, 1)
        assert ledger.billed(now + 1, now + 2) == billing.Billed(0, 0, 0)
        doc = billing.summary(ledger, default_api_settings(), None, now)
        assert doc["today"]["cost"] == billing.amount(6.5, 0.5)
        assert doc["month"]["unknown_answers"] == 1 and not doc["month"]["complete"]
        assert "1 answer(s) did not say" in billing.summary_lines(doc)[0]
    finally:
        ledger.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_budget_stops_api_work_until_the_next_day() -> None:
    """Once today's cost reaches the budget, require raises with the next local midnight;
    that day begins with nothing billed."""
    tz = ZoneInfo("Asia/Shanghai")
    clock = Clock(datetime(2026, 12, 1, 22, 0, tzinfo=tz).timestamp())
    bill = Bill(tz, clock=clock)
    api = ApiSettings(price_per_hour=3600.0, daily_budget=5.0)  # 1 CNY per billed second
    bill.add({"seconds": 4})
    bill.require(api)
    bill.add({"seconds": 1})
    bill.add({"prompt_tokens": 9})  # says nothing of seconds: unknown, not guessed
    with pytest.raises(BudgetReachedError, match=r"daily budget of 5\.00 CNY is reached") as info:
        bill.require(api)
    assert info.value.pauses
    assert info.value.resume_at == datetime(2026, 12, 2, tzinfo=tz).timestamp()
    assert bill.unknown == 1
    clock.now = info.value.resume_at
    bill.require(api)
    assert bill.seconds == 0


def test_the_gate_waits_for_the_budget_day_instead_of_backing_off() -> None:
    """A budget pause lets its next probe through when the next day begins, not a second
    later: nothing would change before then."""
    mono = Clock(1000.0)
    gate = PauseGate(60.0, clock=mono)
    change = gate.finished(1, BudgetReachedError("spent", resume_at=time.time() + 7200))
    assert change is not None and change.paused
    wait = gate.next_probe_in()
    assert wait is not None and 7190 < wait <= 7200


def _with_budget(w: World, budget: float | None) -> JobContext:
    settings = Settings(**{**w.settings.__dict__,
                           "api": ApiSettings(price_per_hour=3600.0, daily_budget=budget)})
    ctx = w.context(settings)
    return JobContext(**{**ctx.__dict__, "bill": Bill(None)})


def test_a_spent_budget_pauses_the_job_before_it_pays(
        world: World, logs: list[dict[str, Any]]) -> None:  # noqa: F811
    """The first file bills 2 s (2 CNY) and reaches a budget of 2: the next file is requeued
    as paused, its attempt refunded, nothing paid; the cost is in the sidecar and the line."""
    ctx = _with_budget(world, 2.0)
    assert JobRunner(ctx).run(world.claim("a.wav", b"one")).outcome == "done"
    cost = world.sidecar("a")["cost"]
    assert cost == {"amount": 2.0, "currency": "CNY", "price_per_hour": 3600.0,
                    "billed_seconds": 2, "complete": True}
    (done,) = lines(logs, "job.done")
    assert (done["cost"], done["currency"], done["billed_seconds"]) == (2.0, "CNY", 2)
    job = world.claim("b.wav", b"two")
    outcome = JobRunner(ctx).run(job)
    assert outcome.outcome == "paused" and isinstance(outcome.error, BudgetReachedError)
    assert world.transcriber.paid == 1
    assert world.job(job.id).attempts == 0 and world.job(job.id).state == "QUEUED"


def test_an_answer_is_billed_even_when_the_ledger_refuses_it(world: World) -> None:  # noqa: F811
    """A paid answer the journal could not keep was paid all the same: the bill counts it."""
    bill = Bill(None)
    job = world.claim("a.wav")
    journal = _JobJournal(world.ledger, job, "v", own_only=False, bill=bill,
                          api=ApiSettings(daily_budget=1.0))
    world.ledger.close()
    with pytest.raises(LedgerError):
        journal.record("0.000-1.000", {"usage": {"seconds": 7}})
    assert bill.seconds == 7
