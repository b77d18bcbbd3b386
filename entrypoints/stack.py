"""`gnomon stack`: the whole decoupled topology on one machine, without Docker, against the PostgreSQL and Redis
that the settings name. It runs `gnomon migrate` once, then one API, N schedulers and N workers, each as its
own child process, exactly as separate machines would run them (they share only PostgreSQL and Redis).

A small supervisor in the spirit of honcho: every line a child writes is prefixed with its name (`worker.2 |`;
with `--log-format json` the name goes into the JSON object as "process" instead, so lines stay JSON).
Nothing is restarted: if a child exits on its own, the others are stopped and the stack exits non-zero.
SIGTERM or SIGINT is forwarded to every child as SIGTERM; the stack exits when they have drained (0 if all
exited 0). A second signal, or children still running a while after their shutdown grace, means SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Mapping
from typing import Final, TextIO

from attrs import field, frozen

from entrypoints.settings import Settings, child_environment, flag_environment

log = logging.getLogger("gnomon.stack")
KILL_AFTER_GRACE: Final = 15.0  # seconds beyond the shutdown grace before stragglers get SIGKILL
LINE_LIMIT: Final = 16 * 1024 * 1024  # a traceback in one JSON line can be long


@frozen
class Child:
    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(factory=dict)  # added to the stack's environment


def stack_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="the API's address (GNOMON_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="the API's port (GNOMON_PORT, default 8000)")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn processes of the API")
    parser.add_argument("--schedulers", type=int, default=2, help="scheduler processes")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--queues", default="default", help="comma-separated queues of every worker")
    parser.add_argument("--concurrency", type=int, default=16, help="jobs run at once by each worker")
    parser.add_argument("--config", help="path of gnomon.toml (default: ./gnomon.toml if present)")
    parser.add_argument("--database-url", help="PostgreSQL URL (GNOMON_DATABASE_URL)")
    parser.add_argument("--redis-url", help="Redis URL (GNOMON_REDIS_URL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="GNOMON_LOG_FORMAT")


def plan(args: argparse.Namespace, settings: Settings) -> list[Child]:
    """The children after `migrate`: the API, then the schedulers, then the workers. Schedulers and workers get
    GNOMON_METRICS_PORT 0 (each any free port) unless a base port is set, which they then count up from."""
    base = settings.metrics_port or 0

    def port(n: int) -> str:
        return str(base + n if base else 0)

    worker_args = ("worker", "--queues", args.queues, "--concurrency", str(args.concurrency))
    schedulers = [Child(f"scheduler.{i + 1}", ("scheduler",), {"GNOMON_METRICS_PORT": port(i)})
                  for i in range(args.schedulers)]
    workers = [Child(f"worker.{i + 1}", worker_args, {"GNOMON_METRICS_PORT": port(args.schedulers + i)})
               for i in range(args.workers)]
    return [Child("api", ("api", "--workers", str(args.api_workers)), {"GNOMON_METRICS_PORT": ""}),
            *schedulers, *workers]


def start_stack(args: argparse.Namespace, settings: Settings) -> int:
    """Run the stack until a signal (or a child's exit); the exit status of the whole."""
    if settings.database_url is None or settings.redis_url is None:
        log.error("gnomon stack needs GNOMON_DATABASE_URL and GNOMON_REDIS_URL (or --database-url, --redis-url)")
        return 2
    if min(args.api_workers, args.schedulers, args.workers) < 1:
        log.error("--api-workers, --schedulers and --workers must be at least 1")
        return 2
    env = flag_environment(vars(args)) | {"PYTHONUNBUFFERED": "1"}
    stack = Stack(env, settings.log_format == "json", settings.shutdown_grace_seconds + KILL_AFTER_GRACE)
    return asyncio.run(stack.run(plan(args, settings)))


class Stack:
    def __init__(self, env: Mapping[str, str], json_lines: bool, kill_after: float, out: TextIO = sys.stdout) -> None:
        self.env = dict(env)
        self.json_lines = json_lines
        self.kill_after = kill_after
        self.out = out
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.ready: set[str] = set()
        self.expected: set[str] = set()
        self.stopping = False
        self.failure: int | None = None  # exit status due to a child that ended on its own

    async def run(self, children: list[Child]) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            migrated = await self._migrate()
            if migrated != 0 or self.stopping:
                return migrated
            self.expected = {child.name for child in children}
            codes = await asyncio.gather(*(self._watch(child) for child in children))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("stack stopped: %s", ", ".join(f"{c.name}={code}" for c, code in zip(children, codes, strict=True)))
        if self.failure is not None:
            return self.failure
        return 0 if all(code == 0 for code in codes) else 1

    async def _migrate(self) -> int:
        code = await self._watch(Child("migrate", ("migrate",), {"GNOMON_METRICS_PORT": ""}), expected_exit=True)
        if code != 0:
            log.error("migrate exited %s; nothing else started", code)
        return code

    async def _watch(self, child: Child, *, expected_exit: bool = False) -> int:
        """Start the child, copy its output, wait for its end; an unexpected end stops the stack."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entrypoints.cli", *child.args, env=child_environment(self.env | dict(child.env)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            limit=LINE_LIMIT)
        self.procs[child.name] = proc
        if self.stopping:  # a signal came while the children were being started
            _send(proc, signal.SIGTERM)
        assert proc.stdout is not None
        await self._copy(child.name, proc.stdout)
        code = await proc.wait()
        del self.procs[child.name]
        if self.stopping and code == -signal.SIGTERM:
            code = 0  # our SIGTERM came before it had set up its handlers: it had started nothing yet
        if not expected_exit and not self.stopping:
            log.error("%s exited with status %s on its own; stopping the stack (nothing is restarted)", child.name,
                      code)
            self.failure = 128 - code if code < 0 else code or 1  # killed by signal N: 128 + N, as shells say
            self._stop()
        return code

    async def _copy(self, name: str, stream: asyncio.StreamReader) -> None:
        while line := await _line(stream):
            text = line.decode(errors="replace").rstrip("\r\n")
            self.out.write(self._prefixed(name, text) + "\n")
            self.out.flush()
            if "ready: " in text and name in self.expected and name not in self.ready:
                self._mark_ready(name)

    def _prefixed(self, name: str, text: str) -> str:
        if self.json_lines and text.startswith("{"):
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if isinstance(record, dict):
                return json.dumps({"process": name, **record})
        return f"{name:<12}| {text}"

    def _mark_ready(self, name: str) -> None:
        self.ready.add(name)
        if self.ready >= self.expected:
            log.info("stack ready: %s", ", ".join(sorted(self.expected)))

    def _on_signal(self, sig: int) -> None:
        if self.stopping:
            log.warning("second %s: killing every child", signal.Signals(sig).name)
            self._kill()
            return
        log.info("%s: stopping every child (SIGTERM), waiting for them to drain", signal.Signals(sig).name)
        self._stop()

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for proc in self.procs.values():
            _send(proc, signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.kill_after, self._kill)

    def _kill(self) -> None:
        for name, proc in self.procs.items():
            log.warning("killing %s (pid %d)", name, proc.pid)
            _send(proc, signal.SIGKILL)


async def _line(stream: asyncio.StreamReader) -> bytes:
    """The next line (b"" at the end). asyncio drops a line longer than LINE_LIMIT: say so instead."""
    try:
        return await stream.readline()
    except ValueError:
        return b"[gnomon stack: a line longer than 16 MiB was dropped]\n"


def _send(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            proc.send_signal(sig)
