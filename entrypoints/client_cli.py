"""`gnomon jobs ...` and `gnomon schedules ...`: client commands that talk to a running API (--url, --token;
GNOMON_URL, GNOMON_TOKEN). Tables by default, `--json` for programs.

Exit codes: 0 done; 1 the API refused (the problem is printed) or could not be reached, or `jobs wait` saw a
job fail; 2 a bad command line or setting; 3 `jobs wait --timeout` ran out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, Final

from adapters.http.client import GnomonClient, GnomonError
from entrypoints import client_jobs, client_schedules
from entrypoints.client_jobs import UsageError
from entrypoints.settings import ClientSettings, SettingsError

COMMANDS: Final = ("jobs", "schedules")
Action = Callable[[argparse.Namespace, GnomonClient], int]

ACTIONS: Final[dict[tuple[str, str], Action]] = {
    ("jobs", "submit"): client_jobs.submit,
    ("jobs", "get"): client_jobs.get,
    ("jobs", "list"): client_jobs.list_jobs,
    ("jobs", "cancel"): client_jobs.each(lambda client: client.cancel_job),
    ("jobs", "retry"): client_jobs.each(lambda client: client.retry_job),
    ("schedules", "create"): client_schedules.create,
    ("schedules", "list"): client_schedules.list_schedules,
    ("schedules", "get"): client_schedules.get,
    ("schedules", "pause"): client_schedules.pause,
    ("schedules", "resume"): client_schedules.resume,
    ("schedules", "trigger"): client_schedules.trigger,
    ("schedules", "preview"): client_schedules.preview,
    ("schedules", "delete"): client_schedules.delete,
}


def add_commands(commands: Any) -> None:
    """Register `jobs` and `schedules` on the `gnomon` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the API's base URL (GNOMON_URL, default http://127.0.0.1:8000)")
    common.add_argument("--token", help="bearer token (GNOMON_TOKEN, else the first of GNOMON_API_TOKENS)")
    common.add_argument("--json", action="store_true", dest="as_json", help="print JSON instead of tables")
    client_jobs.add_parser(commands, common)
    client_schedules.add_parser(commands, common)


def main(args: argparse.Namespace) -> int:
    try:
        settings = ClientSettings.from_env({"url": args.url, "token": args.token})
        if (args.command, args.action) == ("jobs", "wait"):
            return client_jobs.wait(args, settings)
        with GnomonClient(settings.url, settings.token, idempotency_keys=True) as client:
            return ACTIONS[args.command, args.action](args, client)
    except (SettingsError, UsageError, OSError) as exc:
        print(f"gnomon: {exc}", file=sys.stderr)
        return 2
    except GnomonError as exc:
        print(f"gnomon: {exc}", file=sys.stderr)
        return 1
