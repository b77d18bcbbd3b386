"""How the client commands print: aligned tables and key/value blocks for people, JSON for programs, and a text
progress bar on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, TextIO

JOB_COLUMNS: Final = ("id", "task", "queue", "state", "attempt", "run_at", "finished_at")
RUN_COLUMNS: Final = ("attempt", "outcome", "worker_id", "started_at", "duration_seconds", "error")
SCHEDULE_COLUMNS: Final = ("id", "name", "rule", "timezone", "task", "paused", "next_fire_at")
MAX_CELL: Final = 60


def cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO = sys.stdout) -> None:
    """Rows under upper-case headers, columns padded to their widest cell."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [[c.upper() for c in columns], *cells]:
        out.write("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() + "\n")


def fields(record: Mapping[str, Any], out: TextIO = sys.stdout) -> None:
    """One `key  value` line per field; nested values as compact JSON."""
    width = max((len(key) for key in record), default=0)
    for key, value in record.items():
        out.write(f"{key.ljust(width)}  {'-' if value is None else _full(value)}\n")


def _full(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def as_json(value: Any, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(value, indent=2) + "\n")


def schedule_row(schedule: Mapping[str, Any]) -> dict[str, Any]:
    rule = schedule.get("cron") or f"every {schedule.get('interval_seconds')}s"
    return {**schedule, "rule": rule, "task": schedule.get("job", {}).get("task")}


class Progress:
    """`[#####.....] 512/1000 done  500 succeeded  12 failed  3.1s` on stderr: redrawn in place on a terminal,
    else one line per `every` seconds (and the last one), so that logs stay readable."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30, every: float = 1.0) -> None:
        self.total, self.out, self.width, self.every = total, out, width, every
        self.started = self.shown = time.monotonic()
        self.tty = out.isatty()
        self.last = ""
        self.printed: int | None = None  # the `done` of the last line printed (not on a terminal)

    def update(self, done: int, counts: Mapping[str, int], *, final: bool = False) -> None:
        now = time.monotonic()
        filled = self.width * done // max(self.total, 1)
        summary = "  ".join(f"{n} {state}" for state, n in sorted(counts.items()) if n)
        self.last = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} done"
                     f"{'  ' + summary if summary else ''}  {now - self.started:.1f}s")
        if self.tty:
            self.out.write("\r" + self.last + ("\n" if final else ""))
        elif (final and done != self.printed) or (not final and now - self.shown >= self.every):
            self.out.write(self.last + "\n")
            self.shown, self.printed = now, done
        self.out.flush()
