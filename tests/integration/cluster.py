"""A throwaway PostgreSQL 15 cluster of one test: its own data directory, port and server process, so that a
test may stop, crash or restart it without touching the machine's shared server.

We run as root and PostgreSQL refuses to, so every server command runs as the `postgres` OS user
(`runuser -u postgres --`) on a temporary directory chowned to it. Authentication is `trust`; clients connect
over TCP to 127.0.0.1 as the `postgres` role. The Unix socket lives in the data directory's parent, never in
the shared /var/run/postgresql.

    cluster = Cluster.create()      # initdb, not started
    cluster.start()
    cluster.create_database("gnomon")
    cluster.url("gnomon")           # postgresql://postgres@127.0.0.1:<port>/gnomon
    cluster.stop("immediate")       # a crash, as far as clients can tell
    cluster.destroy()               # stop if running, remove the directory
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final, Literal

import psycopg
from psycopg import sql

BIN: Final = Path(os.environ.get("GNOMON_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER: Final = "postgres"
ROLE: Final = "postgres"
StopMode = Literal["smart", "fast", "immediate"]

# Settings of a disposable server: no fsync (the data dies with the test; a server crash keeps the kernel's cache),
# small and quiet. Commits stay synchronous, as gnomon requires (docs/design.md, "Commits stay synchronous"): an
# asynchronous commit acknowledged before a crash is lost with it, which the crash tests would see as lost work.
CONF: Final = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 32MB
max_connections = 60
logging_collector = off
log_min_messages = warning
"""


class ClusterError(RuntimeError):
    """The throwaway server could not be created, started or stopped; the message carries its log."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.logfile = root / "server.log"

    @classmethod
    def create(cls, *, port: int | None = None) -> Cluster:
        """initdb a new cluster in a temporary directory owned by the postgres user (not started)."""
        root = Path(tempfile.mkdtemp(prefix="gnomon-pg-"))
        account = pwd.getpwnam(OS_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
        cluster = cls(root, port or free_port())
        try:
            cluster._run("initdb", "-D", str(cluster.data), "-U", ROLE, "-A", "trust", "-E", "UTF8",
                         "--no-sync", "--locale=C")
            with (cluster.data / "postgresql.conf").open("a") as conf:  # root may append; owner unchanged
                conf.write(CONF.format(port=cluster.port, socket_dir=root))
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cluster

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return subprocess.run(self._as_postgres("pg_ctl", "status", "-D", str(self.data)),
                              capture_output=True, check=False).returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.logfile), "-w",
                  "-t", str(int(timeout)))
        self._wait_accepting(timeout)

    def stop(self, mode: StopMode = "fast", timeout: float = 60.0) -> None:
        """Stop the server: `fast` disconnects clients and shuts down cleanly; `immediate` is a crash
        (no checkpoint; recovery runs on the next start)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout)))

    def restart(self, mode: StopMode = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def destroy(self) -> None:
        """Stop the server (immediately) if it runs, and remove every file of the cluster."""
        try:
            if self.data.exists() and self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _wait_accepting(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > end:
                    raise ClusterError(f"server on port {self.port} never accepted connections: {exc}\n"
                                       f"{self.log()[-3000:]}") from exc
                time.sleep(0.1)

    def _as_postgres(self, program: str, *args: str) -> list[str]:
        path = str(BIN / program) if (BIN / program).exists() else program
        return ["runuser", "-u", OS_USER, "--", path, *args]

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(self._as_postgres(program, *args), capture_output=True, text=True, check=False,
                              cwd=self.root)
        if done.returncode != 0:
            raise ClusterError(f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}\n{self.log()[-3000:]}")
