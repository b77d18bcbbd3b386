"""The `gnomon` command (SPEC §7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Sequence

from attrs import evolve

from entrypoints import client_cli
from entrypoints.logs import setup_logging
from entrypoints.settings import Settings, SettingsError, export_flags
from entrypoints.stack import stack_flags, start_stack


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="path of gnomon.toml (default: ./gnomon.toml if present)")
    parser.add_argument("--database-url", help="PostgreSQL URL (GNOMON_DATABASE_URL)")
    parser.add_argument("--redis-url", help="Redis URL (GNOMON_REDIS_URL)")
    parser.add_argument("--log-format", choices=["text", "json"], help="GNOMON_LOG_FORMAT")


def _worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queues", default="default", help="comma-separated queues, in priority order")
    parser.add_argument("--concurrency", type=int, default=16, help="jobs run at once by this worker")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gnomon", description="Distributed scheduler for delayed and recurring jobs")
    commands = top.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="API + scheduler + worker in one process, in memory unless told")
    dev.add_argument("--host", default=None)
    dev.add_argument("--port", type=int, default=None)
    _common(dev)
    _worker_flags(dev)
    api = commands.add_parser("api", help="the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each with its own pools)")
    _common(api)
    scheduler = commands.add_parser("scheduler", help="the scheduler (any number of replicas)")
    _common(scheduler)
    worker = commands.add_parser("worker", help="a worker")
    _common(worker)
    _worker_flags(worker)
    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    _common(migrate)
    stack_flags(commands.add_parser("stack", help="migrate, then API, schedulers and workers as child processes"))
    client_cli.add_commands(commands)
    return top


def _settings(args: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "queues", "concurrency")}
    return Settings.from_env(flags)


def _queues(text: str) -> tuple[str, ...]:
    return tuple(q.strip() for q in text.split(",") if q.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in client_cli.COMMANDS:  # clients of a running API: none of the server settings apply
        return client_cli.main(args)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"gnomon: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.command, settings.log_format)
    try:
        return COMMANDS[args.command](args, settings)
    except SettingsError as exc:
        print(f"gnomon: {exc}", file=sys.stderr)
        return 2


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from entrypoints.container import build  # the server stack loads only for server commands
    from entrypoints.processes import Services, run

    if not settings.api_tokens:
        settings = evolve(settings, api_tokens=(secrets.token_urlsafe(18),))
    runtime = build(settings, single_process=True)
    host, port = settings.host, settings.port
    services = Services(api=(host, port), scheduler=True, queues=_queues(args.queues), concurrency=args.concurrency)

    def banner() -> None:
        base = f"http://{host}:{port}"
        print(f"gnomon dev ({settings.backend} backend) is up.\n"
              f"  API:     {base}/v1\n  Docs:    {base}/schema  (OpenAPI: {base}/schema/openapi.json)\n"
              f"  UI:      {base}/ui  (sign in with the token)\n"
              f"  Token:   {settings.api_tokens[0]}\n"
              f"  Try:     curl -H 'Authorization: Bearer {settings.api_tokens[0]}' {base}/v1/queues\n"
              f"  Stop:    Ctrl-C", flush=True)

    asyncio.run(run(runtime, services, on_ready=banner))
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from entrypoints.container import build  # the server stack loads only for server commands
    from entrypoints.processes import Services, run

    if not settings.api_tokens:
        raise SettingsError("GNOMON_API_TOKENS must be set for `gnomon api` (comma-separated bearer tokens)")
    if args.workers > 1:
        return _api_processes(args, settings)
    asyncio.run(run(build(settings), Services(api=(settings.host, settings.port))))
    return 0


def _api_processes(args: argparse.Namespace, settings: Settings) -> int:
    """uvicorn's own supervisor with N worker processes, each building the app from the environment.

    Their metrics go through prometheus-client's multiprocess mode, so that /metrics reports the sum whichever
    process answers: a directory made here for this run (empty, so a restart never adds the last run's counts),
    named in the environment before the workers start (prometheus-client reads it when first imported), and
    removed at exit. uvicorn replaces a worker that dies; the dead one's files stay, and so do its counts.
    """
    import shutil
    import tempfile

    import uvicorn

    from entrypoints.settings import export_variable

    export_flags(vars(args))  # the workers see only the environment
    directory = tempfile.mkdtemp(prefix="gnomon-api-metrics-")
    export_variable("PROMETHEUS_MULTIPROC_DIR", directory)  # replaces any inherited one: those files are not ours
    logging.getLogger("gnomon").info("metrics of the API processes are summed in %s", directory)
    try:
        uvicorn.run("entrypoints.asgi:create_shared", factory=True, host=settings.host, port=settings.port,
                    workers=args.workers, log_config=None, access_log=False, lifespan="on")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def _scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from entrypoints.container import build  # the server stack loads only for server commands
    from entrypoints.processes import Services, run

    return asyncio.run(run(build(settings, scheduler_only=True), Services(scheduler=True)))


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from entrypoints.container import build  # the server stack loads only for server commands
    from entrypoints.processes import Services, leave_stuck_threads, run

    runtime = build(settings)
    runtime.adapters.tasks().check()
    code = asyncio.run(run(runtime, Services(queues=_queues(args.queues), concurrency=args.concurrency)))
    return leave_stuck_threads(code)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from adapters.postgres.migrate import MigrationError, migrate
    from domain.errors import Unavailable

    if settings.database_url is None:
        raise SettingsError("GNOMON_DATABASE_URL (or --database-url) is needed to migrate")
    try:
        applied = asyncio.run(migrate(settings.database_url))
    except (MigrationError, Unavailable, psycopg.Error, OSError) as exc:
        print(f"gnomon migrate: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("gnomon").info("applied %d migration(s): %s", len(applied), ", ".join(applied) or "none pending")
    return 0


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    return start_stack(args, settings)


COMMANDS = {"dev": _dev, "api": _api, "scheduler": _scheduler, "worker": _worker, "migrate": _migrate,
            "stack": _stack}

if __name__ == "__main__":
    raise SystemExit(main())
