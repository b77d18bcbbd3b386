"""Real `gnomon` processes for integration tests: started with their own environment, logs kept in a file,
stopped by signal (SIGTERM to drain, SIGKILL to simulate a crash)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def gnomon_env(database_url: str | None, redis_url: str | None, *, prefix: str | None = None,
               **settings: object) -> dict[str, str]:
    """The environment of a gnomon process: GNOMON_* from keyword names (lease_seconds -> GNOMON_LEASE_SECONDS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNOMON_")}
    env["PYTHONUNBUFFERED"] = "1"
    if database_url:
        env["GNOMON_DATABASE_URL"] = database_url
    if redis_url:
        env["GNOMON_REDIS_URL"] = redis_url
    if prefix:
        env["GNOMON_REDIS_PREFIX"] = prefix
    for name, value in settings.items():
        env[f"GNOMON_{name.upper()}"] = str(value)
    return env


class GnomonProcess:
    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.args = args
        self._log = tempfile.NamedTemporaryFile(prefix="gnomon-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", *args], env=dict(env), cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while text not in self.log:
            if not self.alive():
                raise AssertionError(f"gnomon {self.args} exited {self.proc.returncode}:\n{self.log[-3000:]}")
            if time.monotonic() > end:
                raise AssertionError(f"gnomon {self.args} never logged {text!r}:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no goodbye, no drain."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


@contextmanager
def gnomon(*args: str, env: Mapping[str, str]) -> Iterator[GnomonProcess]:
    """A running `gnomon <args>`; killed at the end if still alive. Its log is printed if the test fails."""
    process = GnomonProcess(list(args), env)
    try:
        yield process
    except BaseException:
        sys.stderr.write(f"--- log of gnomon {' '.join(args)} ---\n{process.log[-5000:]}\n")
        raise
    finally:
        process.close()
