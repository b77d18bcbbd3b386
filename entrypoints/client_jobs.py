"""`gnomon jobs submit|get|list|cancel|retry|wait`: the jobs API from the shell, through the Python client."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from adapters.http.client import AsyncGnomonClient, GnomonClient, GnomonError
from adapters.http.client_types import JobRequest
from entrypoints.client_output import JOB_COLUMNS, RUN_COLUMNS, Progress, as_json, fields, table
from entrypoints.client_wait import CONCURRENCY, FINAL, Watch
from entrypoints.settings import ClientSettings

MAX_BATCH: Final = 10_000  # what POST /v1/jobs/batch takes at once
TIMED_OUT: Final = 3


class UsageError(Exception):
    """A command line that cannot be sent as it is (exit code 2)."""


def payload(text: str) -> dict[str, Any]:
    """A JSON object, given inline or as @path."""
    source = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        found = json.loads(source)
    except ValueError as exc:
        raise UsageError(f"--payload is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise UsageError("--payload must be a JSON object")
    return found


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    jobs = commands.add_parser("jobs", help="submit, inspect, cancel, retry and wait for jobs (via the API)")
    actions = jobs.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", parents=[common], help="submit one job, or --count N at once")
    submit.add_argument("--task", required=True)
    submit.add_argument("--payload", default="{}", help="JSON object, or @file.json")
    submit.add_argument("--queue")
    submit.add_argument("--priority", type=int, help="0-9, higher first")
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--delay", type=float, help="seconds from now")
    when.add_argument("--run-at", help="RFC 3339 instant")
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--timeout", type=float, help="seconds an attempt may run")
    submit.add_argument("--idempotency-key", help="with --count N: KEY-0 ... KEY-(N-1)")
    submit.add_argument("--count", type=int, default=1, help="submit N such jobs, in batches of 10,000")
    get = actions.add_parser("get", parents=[common], help="one job")
    get.add_argument("id")
    get.add_argument("--runs", action="store_true", help="with its execution history")
    listing = actions.add_parser("list", parents=[common], help="jobs, newest first")
    for name in ("state", "queue", "task", "schedule-id", "cursor"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--limit", type=int, default=50)
    for name, text in (("cancel", "cancel jobs"), ("retry", "re-queue failed or cancelled jobs")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("ids", nargs="+", metavar="ID")
    wait = actions.add_parser("wait", parents=[common], help="wait until jobs finish; exit 1 if any did not succeed",
                              description="Exit 0: all succeeded; 1: some failed, were cancelled or are unknown; "
                                          f"{TIMED_OUT}: --timeout passed first.")
    wait.add_argument("ids", nargs="*", metavar="ID")
    wait.add_argument("--ids-file", help="a file of ids, one per line ('-': stdin)")
    wait.add_argument("--timeout", type=float, help="give up after so many seconds")
    wait.add_argument("--interval", type=float, default=0.5, help="seconds between polls")


def _job_request(args: argparse.Namespace) -> JobRequest:
    options = {"queue": args.queue, "priority": args.priority, "delay_seconds": args.delay, "run_at": args.run_at,
               "max_attempts": args.max_attempts, "timeout_seconds": args.timeout}
    job: dict[str, Any] = {"task": args.task, "payload": payload(args.payload)}
    return {**job, **{k: v for k, v in options.items() if v is not None}}  # type: ignore[typeddict-item]


def submit(args: argparse.Namespace, client: GnomonClient) -> int:
    job = _job_request(args)
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.count == 1:
        found = client.submit(job.pop("task"), job.pop("payload"), idempotency_key=args.idempotency_key,
                              **job)  # type: ignore[misc]
        if args.as_json:
            as_json(found)
        else:
            fields(found)
        return 0
    ids: list[str] = []
    for start in range(0, args.count, MAX_BATCH):
        keys = range(start, min(start + MAX_BATCH, args.count))
        chunk = [{**job, "idempotency_key": f"{args.idempotency_key}-{i}"} if args.idempotency_key else job
                 for i in keys]
        ids += client.submit_batch(chunk)  # type: ignore[arg-type]
        print(f"submitted {len(ids)}/{args.count}", file=sys.stderr)
    if args.as_json:
        as_json({"ids": ids})
    else:
        sys.stdout.write("".join(f"{i}\n" for i in ids))
    return 0


def get(args: argparse.Namespace, client: GnomonClient) -> int:
    job: dict[str, Any] = dict(client.get_job(args.id))
    runs = client.job_runs(args.id) if args.runs else None
    if args.as_json:
        as_json(job if runs is None else {**job, "runs": runs})
        return 0
    fields(job)
    if runs is not None:
        sys.stdout.write("\n")
        table(runs, RUN_COLUMNS)  # type: ignore[arg-type]
    return 0


def list_jobs(args: argparse.Namespace, client: GnomonClient) -> int:
    filters = {"state": args.state, "queue": args.queue, "task": args.task, "schedule_id": args.schedule_id,
               "limit": args.limit, "cursor": args.cursor}
    page = client.list_jobs(**{k: v for k, v in filters.items() if v is not None})  # type: ignore[misc]
    if args.as_json:
        as_json(page)
    else:
        table(page["items"], JOB_COLUMNS)  # type: ignore[arg-type]
        if page["next_cursor"]:
            print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
    return 0


def each(change: Callable[[GnomonClient], Callable[[str], Any]]) -> Callable[[argparse.Namespace, GnomonClient], int]:
    """Apply cancel or retry to every id given; report each refusal and go on; exit 1 if any was refused."""

    def run(args: argparse.Namespace, client: GnomonClient) -> int:
        done, refused = [], 0
        for job_id in args.ids:
            try:
                done.append(change(client)(job_id))
            except GnomonError as exc:
                if exc.status == 0:
                    raise
                print(f"gnomon: {job_id}: {exc}", file=sys.stderr)
                refused += 1
        if args.as_json:
            as_json(done)
        elif done:
            table(done, JOB_COLUMNS)
        return 1 if refused else 0

    return run


def read_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.ids)
    if args.ids_file:
        text = sys.stdin.read() if args.ids_file == "-" else Path(args.ids_file).read_text()
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise UsageError("give job ids, or --ids-file")
    return list(dict.fromkeys(ids))


def wait(args: argparse.Namespace, settings: ClientSettings) -> int:
    ids = read_ids(args)
    progress = Progress(len(ids))
    watch = asyncio.run(_watch(settings, ids, args.interval, args.timeout, progress))
    states, left = watch.states, len(watch.pending)
    progress.update(len(ids) - left, Counter(states.values()), final=True)
    bad = [i for i in ids if states.get(i) in FINAL - {"succeeded"}]
    if args.as_json:
        as_json({"total": len(ids), "states": Counter(states.values()), "not_succeeded": bad, "timed_out": left > 0})
    else:
        for job_id in bad[:20]:
            print(f"{job_id} {states[job_id]}")
        if len(bad) > 20:
            print(f"... and {len(bad) - 20} more")
    return TIMED_OUT if left else (1 if bad else 0)


async def _watch(settings: ClientSettings, ids: Sequence[str], interval: float, timeout: float | None,
                 progress: Progress) -> Watch:
    deadline = None if timeout is None else time.monotonic() + timeout
    async with AsyncGnomonClient(settings.url, settings.token, max_connections=CONCURRENCY) as client:
        watch = Watch(client, ids)

        def shown(watch: Watch) -> None:
            progress.update(len(watch.ids) - len(watch.pending), Counter(watch.states.values()))

        await watch.run(interval=interval, expired=lambda: deadline is not None and time.monotonic() >= deadline,
                        shown=shown)
    return watch
