"""A throwaway PostgreSQL server for the fleet ledger's tests and benchmarks.

``initdb`` into a temporary folder and ``pg_ctl`` with a Unix socket there (no TCP port), as
an unprivileged user when run as root (the server refuses root). About 1-2 s. Debian keeps the
binaries in ``/usr/lib/postgresql/*/bin``; ``MIMO_WATCHD_TEST_DSN`` points at an existing
server instead. Each test gets a schema of its own (``isolated_dsn``). ``bench/`` imports this
module too, so it imports nothing from pytest.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

TEST_DSN_ENV = "MIMO_WATCHD_TEST_DSN"


def binaries() -> Path | None:
    """The folder of ``initdb``/``pg_ctl`` (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _runner() -> list[str]:
    """How to run the server's programs: as ourselves, or as an unprivileged user if root."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


class PgServer:
    """A PostgreSQL server in a temporary folder, listening on a Unix socket there only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="mimo-pg-"))
        self.data = self.root / "data"
        runner = _runner()
        if runner:
            shutil.chown(self.root, user=runner[2])
        self._as = runner
        self._run("initdb", "-D", str(self.data), "-U", "mw", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        options = (f"-k {self.root} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=on -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  options, "start")
        self.dsn = f"host={self.root} user=mw dbname=postgres"
        self.running = True

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / program), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def stop(self) -> None:
        """Stops the server (at once) and removes its folder; again, does nothing."""
        if not self.running:
            return
        self.running = False
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def isolated_dsn(dsn: str) -> str:
    """``dsn`` with a new, empty schema of its own first on the search path."""
    import psycopg
    from psycopg import conninfo

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return conninfo.make_conninfo(dsn, options=f"-c search_path={schema}")
