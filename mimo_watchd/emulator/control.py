"""Control routes for an emulator running in another process (a daemon under test).

``GET /_emulator/calls`` (every ``CallRecord``, with ``billed`` and ``ok`` = delivered),
``GET|POST /_emulator/faults`` (POST: a JSON list of rules, or one rule), ``POST
/_emulator/reset``, ``GET /_emulator/health`` (with the counts of calls, billed and delivered).
They need no key and are not recorded as calls.
"""

from __future__ import annotations

import json
from typing import Any

from mimo_watchd.emulator.faults import FaultRule, encode_json
from mimo_watchd.emulator.records import Connection, Host

PREFIX = "/_emulator/"


def handle(conn: Connection, emulator: Host, path: str, raw: bytes) -> None:
    """Answer one control request."""
    route = (conn.command, path[len(PREFIX) :].rstrip("/"))
    status = 200
    body: Any
    if route == ("GET", "calls"):
        body = [c.to_dict() for c in emulator.calls]
    elif route == ("GET", "faults"):
        body = [r.to_dict() for r in emulator.faults.pending()]
    elif route == ("POST", "faults"):
        try:
            rules = _rules(raw)
        except (ValueError, TypeError) as exc:
            status, body = 400, {"error": f"bad fault rules: {exc}"}
        else:
            for rule in rules:
                emulator.add_fault(rule)
            body = {"queued": len(rules)}
    elif route == ("POST", "reset"):
        emulator.reset()
        body = {"ok": True}
    elif route == ("GET", "health"):
        calls = emulator.calls
        body = {"status": "ok", "url": emulator.url, "calls": len(calls),
                "billed": sum(c.billed for c in calls), "delivered": sum(c.ok for c in calls)}
    else:
        status, body = 404, {"error": f"no control route {conn.command} {path}"}
    conn.send_bytes(status, encode_json(body), "application/json")


def _rules(raw: bytes) -> list[FaultRule]:
    """Fault rules from a JSON list of rule objects (or a single object)."""
    data: Any = json.loads(raw or b"[]")
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise ValueError("each rule must be an object")
    return [FaultRule.from_dict(item) for item in items]
