"""A real PostgreSQL server on loopback for tests (Debian's postgresql 15), with a password and a database."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port, port_open, wait_for

BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str
    database: str

    def query(self, sql: str) -> str:
        """``psql``'s unaligned answer to ``sql`` (an error raises CalledProcessError)."""
        done = subprocess.run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                               "-d", self.database, "-tAc", sql], env={**os.environ, "PGPASSWORD": self.password},
                              capture_output=True, text=True, timeout=20, check=True)
        return done.stdout.strip()


@contextmanager
def postgres_server(*, user: str = "app", password: str, database: str = "app") -> Iterator[Postgres]:
    """initdb in a temporary folder (as the postgres user: it refuses root), then the server on a free port."""
    if not (BIN / "postgres").exists():
        raise RuntimeError("PostgreSQL 15 is not installed (apt-get install postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
    shutil.chown(root, "postgres", "postgres")
    pwfile = root / "pw"
    pwfile.write_text(password)
    shutil.chown(pwfile, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, str(BIN / "initdb"), "-D", str(root / "data"), "-U", user, "--pwfile", str(pwfile),
                    "--auth=scram-sha-256", "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    port = free_port()
    with open(root / "log", "wb") as log:
        proc = subprocess.Popen([*as_postgres, str(BIN / "postgres"), "-D", str(root / "data"), "-p", str(port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
                                 "-c", "fsync=off"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: port_open(port), timeout=30, what=f"postgres on port {port}")
        server = Postgres(port, user, password, database)
        wait_for(lambda: _created(server), timeout=10, what="the test database")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _created(server: Postgres) -> bool:
    admin = Postgres(server.port, server.user, server.password, "postgres")
    try:
        admin.query(f"CREATE DATABASE {server.database}")
    except subprocess.CalledProcessError as exc:
        return "already exists" in exc.stderr
    return True
