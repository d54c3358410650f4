"""The soak's billing invariant on call records: every repayment of a chunk has a named cause."""

from __future__ import annotations

from typing import Any

from bench.soak_checks import _check_billing


def call(t: float, *, sha: str = "a" * 64, ok: bool = True, fault: str | None = None,
         error: str | None = None, billed: bool = True) -> dict[str, Any]:
    """An emulator call record with what the check reads."""
    return {"time": t, "audio_sha256": sha, "ok": ok, "billed": billed, "fault": fault,
            "error": error, "duration": 10.0, "status": 200 if ok else None,
            "request_id": f"r{t}"}


def check(calls: list[dict[str, Any]], kills: tuple[float, ...] = ()) -> tuple[bool, list[str]]:
    """Run the invariant; its verdict and printed lines."""
    out: list[str] = []
    return _check_billing(calls, list(kills), 0.5, {}, out), out


def test_lost_answers_explain_their_repayments() -> None:
    """A chunk billed again after a slow answer, a dropped body, or a client that timed out on
    its own passes, and the line names each cause and the billed calls per chunk."""
    calls = [call(0, ok=False, fault="slow", error="client gone before the answer"),
             call(20, ok=False, fault="drop-body"), call(25),
             call(1, sha="b" * 64, ok=False, error="client gone before the answer"),
             call(9, sha="b" * 64), call(3, sha="c" * 64)]
    passed, out = check(calls)
    assert passed, out
    assert "6 billed" in out[0] and "3 distinct chunks: 2.000 billed calls per chunk" in out[0]
    assert "answered after the client's read timeout" in out[0]
    assert "connection dropped mid-body" in out[0] and "no fault injected" in out[0]


def test_a_second_delivered_answer_needs_a_kill() -> None:
    """Two delivered answers for one chunk pass only with a kill -9 while the first was in
    flight; otherwise the line names the chunk."""
    twice = [call(0), call(30)]
    assert check(twice, kills=(0.5,))[0]
    passed, out = check(twice, kills=(20.0,))
    assert not passed and "chunk aaaaaaaaaaaa billed 2 times" in "\n".join(out)


def test_unbilled_calls_are_not_repayments() -> None:
    """Error answers (not billed) around one billed call are no repayment."""
    calls = [call(0, ok=False, billed=False, fault="503"), call(1, ok=False, billed=False),
             call(2)]
    passed, out = check(calls)
    assert passed and "repayments: none" in out[0]
