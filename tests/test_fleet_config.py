"""The ``ledger`` section: the backend, where the fleet's connection string comes from, and
that it is a secret (redacted like the API key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimo_watchd.config import LedgerSettings, parse, redact, resolve_dsn
from mimo_watchd.errors import ConfigError

DSN = "host=db.example user=mimo password=s3cret-pw dbname=mimo_watchd"


def settings(tmp_path: Path, ledger: dict[str, object]) -> LedgerSettings:
    doc = {"ledger": ledger, "watches": [{"path": str(tmp_path / "in"),
                                          "processed_dir": str(tmp_path / "done"),
                                          "failed_dir": str(tmp_path / "failed")}]}
    return parse(doc, base=tmp_path, env={}).ledger


def test_sqlite_is_the_default_and_postgres_is_chosen_by_name(tmp_path: Path) -> None:
    """Without a ledger section the backend is SQLite; postgres and its options validate."""
    assert settings(tmp_path, {}).backend == "sqlite"
    chosen = settings(tmp_path, {"backend": "postgres", "host_id": "t1", "lease_seconds": 30})
    assert (chosen.backend, chosen.host_id, chosen.lease_seconds) == ("postgres", "t1", 30)


def test_a_bad_ledger_section_names_its_options(tmp_path: Path) -> None:
    """An unknown backend and a lease shorter than the minimum are reported with their path."""
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, {"backend": "mysql", "lease_seconds": 1})
    text = str(info.value)
    assert "ledger.backend" in text and "ledger.lease_seconds" in text


def test_the_dsn_comes_from_the_file_the_environment_or_the_credential(tmp_path: Path) -> None:
    """ledger.dsn_file first, then $MIMO_WATCHD_DSN, then the systemd credential; each found
    value is redacted from anything written afterwards."""
    (tmp_path / "dsn").write_text(DSN + "\n")
    from_file = resolve_dsn(LedgerSettings(dsn_file=tmp_path / "dsn"), env={})
    assert from_file.reveal() == DSN
    assert redact(f"cannot connect with {DSN}") == "cannot connect with ***"
    assert resolve_dsn(LedgerSettings(), env={"MIMO_WATCHD_DSN": "host=a"}).reveal() == "host=a"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mimo-watchd-dsn").write_text("host=b")
    found = resolve_dsn(LedgerSettings(), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert found.reveal() == "host=b" and "host=b" not in repr(found)


def test_no_dsn_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    """A postgres ledger without a connection string is a ConfigError naming the places."""
    with pytest.raises(ConfigError, match=r"\$MIMO_WATCHD_DSN is not set; no mimo-watchd-dsn"):
        resolve_dsn(LedgerSettings(), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
