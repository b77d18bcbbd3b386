"""Run gnomon's services in this process: any mix of API, scheduler and worker, stopped cleanly by
SIGTERM/SIGINT (the worker drains, SPEC §5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from attrs import frozen

from adapters.metrics.server import ProbeServer
from entrypoints.container import Runtime

log = logging.getLogger("gnomon")
HANDLER_THREADS = "gnomon-task"  # the worker's thread pool (application/worker.py)


@frozen(kw_only=True)
class Services:
    api: tuple[str, int] | None = None  # host, port
    scheduler: bool = False
    queues: tuple[str, ...] = ()  # a worker runs when queues are given
    concurrency: int = 16


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the runner owns the signals and the order of shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def api_server(runtime: Runtime, host: str, port: int) -> _Server:
    from adapters.http.app import create_app

    app = create_app(runtime.use_cases, tokens=runtime.settings.api_tokens, readiness=runtime.readiness,
                     max_body_bytes=runtime.settings.max_body_bytes, registry=runtime.registry)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    return _Server(config)


async def run(runtime: Runtime, services: Services, *, on_ready: Callable[[], None] | None = None) -> int:
    """Start the services, wait for a signal (or for one of them to crash), stop them in order. The exit
    code: 0 after a signal, 1 when a service crashed (a supervisor should then restart the process)."""
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = api_server(runtime, *services.api) if services.api else None
    scheduler = runtime.scheduler_loop() if services.scheduler else None
    worker = (runtime.worker(queues=services.queues, concurrency=services.concurrency, worker_id=worker_id())
              if services.queues else None)
    tasks = {name: asyncio.create_task(coro, name=name) for name, coro in (
        ("api", server.serve() if server else None),
        ("scheduler", scheduler.run() if scheduler else None),
        ("worker", worker.run() if worker else None)) if coro is not None}
    crashed = False
    probes: ProbeServer | None = None
    try:
        if server is not None:
            while not server.started and not tasks["api"].done():  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.01)
        probes, serving = await _probes(runtime, services)
        log.info("ready: %s%s%s", ", ".join(tasks), f" (worker {worker.settings.worker_id})" if worker else "",
                 serving)
        if on_ready is not None:
            on_ready()
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        crashed = _crashed(done - {stopper})
        log.info("stopping: %s", ", ".join(tasks))
    finally:
        await _shutdown(tasks, server, scheduler, worker)
        if probes is not None:
            await probes.close()
        await runtime.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 1 if crashed else 0


async def _probes(runtime: Runtime, services: Services) -> tuple[ProbeServer | None, str]:
    """/metrics, /healthz and /readyz on GNOMON_METRICS_PORT for a process without the API (which has them)."""
    port = runtime.settings.metrics_port
    if port is None or services.api is not None:
        return None, ""
    probes = ProbeServer(runtime.registry, runtime.readiness)
    host = runtime.settings.host
    bound = await probes.start(host, port)
    return probes, f", metrics on http://{host}:{bound}/metrics"


def _crashed(ended: set[asyncio.Task[None]]) -> bool:
    """A service that ends before it is told to has crashed (its loops ride out outages on their own)."""
    for task in ended:
        error = None if task.cancelled() else task.exception()
        log.error("service %s %s", task.get_name(), "crashed" if error else "stopped on its own", exc_info=error)
    return bool(ended)


def leave_stuck_threads(code: int, *, wait: float = 1.0) -> int:
    """The interpreter's exit joins the worker's handler threads, so one sync handler that ignores
    ctx.cancelled would keep a drained worker alive for ever. Its job was released by the drain: after a
    short wait for threads that are just finishing, leave without them (os._exit). Returns `code` otherwise."""
    end = time.monotonic() + wait
    for thread in threading.enumerate():
        if thread.name.startswith(HANDLER_THREADS):
            thread.join(max(end - time.monotonic(), 0.0))
    stuck = [t.name for t in threading.enumerate() if t.name.startswith(HANDLER_THREADS) and t.is_alive()]
    if not stuck:
        return code
    log.warning("exiting with %d handler threads still running (their jobs were released): %s",
                len(stuck), ", ".join(stuck))
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)


async def _shutdown(tasks: dict[str, asyncio.Task[None]], server: _Server | None, scheduler: object,
                    worker: object) -> None:
    if worker is not None:
        worker.stop()  # type: ignore[attr-defined]
    if scheduler is not None:
        scheduler.stop()  # type: ignore[attr-defined]
        tasks["scheduler"].cancel()  # it may sleep on a wake-up channel; a tick in flight is atomic
    if server is not None:
        server.should_exit = True
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("service %s ended with %r", name, result)
