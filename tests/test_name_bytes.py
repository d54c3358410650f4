"""A path whose name is not UTF-8 round-trips, in milliseconds: through the ledger and the JSON
the daemon writes (issue 12 item 8; the daemon-level test is in test_boundary_e2e)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mimo_watchd.ledger import SqliteLedger, State
from mimo_watchd.outputs import dumps

ODD = os.fsdecode(b"/in/\xff\xfe.wav")


def test_the_ledger_keeps_a_path_that_is_not_utf8(tmp_path: Path) -> None:
    """Queued, found again by its path, finished with a result and a reason naming it: every
    field reads back as the same str (the same bytes), and a UTF-8 twin stays apart."""
    ledger = SqliteLedger(tmp_path)
    try:
        job = ledger.enqueue(watch="/in", path=ODD, size=1, mtime_ns=1, sha256="s",
                             arrived_at="t")
        assert job.path == ODD and ledger.active_for_path(ODD) == job
        assert ledger.active_for_path("/in/\N{LATIN SMALL LETTER Y WITH DIAERESIS}.wav") is None
        claimed = ledger.claim()
        assert claimed is not None
        ledger.set_plan(job.id, {"source": ODD}, {"source": {"path": ODD}})
        ledger.requeue(job.id, error=f"cannot read {ODD}")
        assert ledger.jobs()[0].last_error == f"cannot read {ODD}"
        ledger.claim()
        ledger.finish(job.id, State.DONE, final_path=ODD, outcome="done", error=ODD,
                      error_doc={"path": ODD})
        (done,) = ledger.jobs(State.DONE)
        assert (done.path, done.final_path, done.last_error) == (ODD, ODD, ODD)
        assert done.plan == {"source": ODD} and done.result == {"source": {"path": ODD}}
    finally:
        ledger.close()


def test_json_keeps_the_bytes_as_escapes() -> None:
    """The JSON text encodes as UTF-8, shows the odd bytes as escapes and reads back as the
    same bytes; everything else stays readable UTF-8."""
    text = dumps({"path": ODD, "words": "录音"})
    data = text.encode("utf-8")
    assert b"\\udcff\\udcfe" in data and "录音".encode() in data
    assert os.fsencode(json.loads(data)["path"]) == b"/in/\xff\xfe.wav"
