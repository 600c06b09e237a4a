"""A real PostgreSQL server for the tests: one per session (initdb + pg_ctl), a fresh database per test.

The binaries are Debian's (`postgresql` package: /usr/lib/postgresql/<major>/bin), which CI installs
(`.ci/run`, system packages). initdb refuses to run as root, so as root the server runs as the
`postgres` user (`runuser`). Missing binaries fail the test with what to install: never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg


class PostgresUnavailable(RuntimeError):
    pass


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, pg_ctl and postgres."""
    candidates = sorted(
        (Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bin_dir in candidates:
        if all((bin_dir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    raise PostgresUnavailable(
        "PostgreSQL is not installed: the PostgreSQL store's tests need Debian's `postgresql` package "
        "(apt-get install postgresql; .ci/run installs it) providing /usr/lib/postgresql/<major>/bin/"
        "{initdb,pg_ctl,postgres}"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    as_user: str | None  # "postgres" when we are root
    _options: str = ""  # what pg_ctl -o got

    @property
    def admin_url(self) -> str:
        user = self.as_user or _current_user()
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        user = self.as_user or _current_user()
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pause(self) -> None:
        """Stop the server, keeping its data (`resume` starts it again): an outage, or a failover's gap."""
        done = _run(self.as_user, [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
        if done.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl stop failed: {done.stdout}\n{done.stderr}")

    def resume(self) -> None:
        options = self._options
        done = _run(
            self.as_user,
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "start",
            ],
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl start failed: {done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        _run(self.as_user, [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"])
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _run(as_user: str | None, argv: list[str]) -> subprocess.CompletedProcess[str]:
    if as_user is not None:
        argv = ["runuser", "-u", as_user, "--", *argv]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)


def start_postgres(*, fsync: bool = False) -> PostgresServer:
    """initdb a throwaway cluster and start it on a free loopback port (socket in its data dir).

    Tests run without fsync (nothing survives the session anyway); the benchmark asks for it, so its
    commits cost what a real server's do.
    """
    bin_dir = postgres_bin_dir()
    as_user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="trm-sre-pg-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if as_user is not None:
        shutil.chown(root, as_user)
        shutil.chown(data_dir, as_user)
        os.chmod(root, 0o755)
    init = _run(as_user, [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-E", "UTF8", "--no-sync"])
    if init.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {init.stdout}\n{init.stderr}")
    port = _free_port()
    options = (
        f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
        " -c max_connections=200 -c synchronous_commit=on"
    )
    start = _run(
        as_user,
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            options,
            "-l",
            str(data_dir / "server.log"),
            "-w",
            "start",
        ],
    )
    if start.returncode != 0:
        log = (data_dir / "server.log").read_text(errors="replace") if (data_dir / "server.log").exists() else ""
        raise PostgresUnavailable(f"pg_ctl start failed: {start.stdout}\n{start.stderr}\n{log}")
    return PostgresServer(bin_dir, data_dir, port, as_user, options)
