"""`gnomon schedules create|list|get|pause|resume|trigger|preview|delete`, through the Python client."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from adapters.http.client import GnomonClient
from adapters.http.client_types import JobTemplate
from entrypoints.client_jobs import payload
from entrypoints.client_output import SCHEDULE_COLUMNS, as_json, fields, schedule_row, table


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    schedules = commands.add_parser("schedules", help="create, inspect and steer recurring jobs (via the API)")
    actions = schedules.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[common], help="a new schedule")
    create.add_argument("--name", required=True)
    create.add_argument("--task", required=True)
    create.add_argument("--payload", default="{}", help="JSON object, or @file.json")
    rule = create.add_mutually_exclusive_group(required=True)
    rule.add_argument("--cron", help="5 fields, or 6 with seconds first")
    rule.add_argument("--every", type=int, metavar="SECONDS", help="a fixed interval")
    create.add_argument("--timezone", help="IANA zone the cron is read in (default UTC)")
    create.add_argument("--queue")
    create.add_argument("--priority", type=int)
    create.add_argument("--max-attempts", type=int)
    create.add_argument("--timeout", type=float, help="seconds an attempt may run")
    create.add_argument("--misfire-policy", choices=["skip", "run_once", "run_all"])
    create.add_argument("--overlap-policy", choices=["allow", "skip", "buffer_one", "cancel_other"])
    create.add_argument("--jitter", type=int, metavar="SECONDS")
    create.add_argument("--max-runs", type=int)
    create.add_argument("--start-at", help="RFC 3339")
    create.add_argument("--end-at", help="RFC 3339")
    listing = actions.add_parser("list", parents=[common], help="schedules")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--cursor")
    for name, text in (("get", "one schedule"), ("resume", "resume (the misfire policy applies)"),
                       ("trigger", "fire one job now"), ("delete", "delete (its past jobs stay)")):
        actions.add_parser(name, parents=[common], help=text).add_argument("key", metavar="ID_OR_NAME")
    pause = actions.add_parser("pause", parents=[common], help="pause, optionally until a time")
    pause.add_argument("key", metavar="ID_OR_NAME")
    pause.add_argument("--note")
    pause.add_argument("--until", help="RFC 3339: resume by itself then")
    preview = actions.add_parser("preview", parents=[common], help="the next fire times")
    preview.add_argument("key", metavar="ID_OR_NAME")
    preview.add_argument("--count", type=int, default=10)


def create(args: argparse.Namespace, client: GnomonClient) -> int:
    template = {"task": args.task, "payload": payload(args.payload), "queue": args.queue,
                "priority": args.priority, "max_attempts": args.max_attempts, "timeout_seconds": args.timeout}
    options = {"cron": args.cron, "interval_seconds": args.every, "timezone": args.timezone,
               "misfire_policy": args.misfire_policy, "overlap_policy": args.overlap_policy,
               "jitter_seconds": args.jitter, "max_runs": args.max_runs, "start_at": args.start_at,
               "end_at": args.end_at}
    job: JobTemplate = {k: v for k, v in template.items() if v is not None}  # type: ignore[assignment]
    found = client.create_schedule(args.name, job, **{k: v for k, v in options.items() if v is not None})
    return _one(args, found)


def list_schedules(args: argparse.Namespace, client: GnomonClient) -> int:
    page = client.list_schedules(limit=args.limit, cursor=args.cursor)
    if args.as_json:
        as_json(page)
        return 0
    table([schedule_row(s) for s in page["items"]], SCHEDULE_COLUMNS)  # type: ignore[arg-type]
    if page["next_cursor"]:
        print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
    return 0


def get(args: argparse.Namespace, client: GnomonClient) -> int:
    return _one(args, client.get_schedule(args.key))


def pause(args: argparse.Namespace, client: GnomonClient) -> int:
    return _one(args, client.pause_schedule(args.key, note=args.note, until=args.until))


def resume(args: argparse.Namespace, client: GnomonClient) -> int:
    return _one(args, client.resume_schedule(args.key))


def trigger(args: argparse.Namespace, client: GnomonClient) -> int:
    return _one(args, client.trigger_schedule(args.key))


def preview(args: argparse.Namespace, client: GnomonClient) -> int:
    times = client.preview_schedule(args.key, args.count)
    if args.as_json:
        as_json(times)
    else:
        table(times, ("utc", "local"))  # type: ignore[arg-type]
    return 0


def delete(args: argparse.Namespace, client: GnomonClient) -> int:
    client.delete_schedule(args.key)
    if args.as_json:
        as_json({"deleted": args.key})
    else:
        print(f"deleted {args.key}")
    return 0


def _one(args: argparse.Namespace, found: Any) -> int:
    if args.as_json:
        as_json(found)
    else:
        fields(found)
    return 0
