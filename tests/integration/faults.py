"""The machinery of the fault-injection suite (test_faults.py): a fleet of real gnomon processes that a driver
kills with SIGKILL and restarts, a load generator that submits through the API and retries what an outage
refused, and the audit of what PostgreSQL holds at the end.

Everything here is bounded in time; nothing waits for a condition without a deadline.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.integration.processes import GnomonProcess

TERMINAL: Final = ("succeeded", "failed", "cancelled")
QUICK_BACKOFF: Final = {"base_seconds": 0.2, "factor": 1, "max_seconds": 0.2, "jitter": False}


class Fleet:
    """The processes of a stack by name ("api", "scheduler.1", "worker.2", ...), restartable by name."""

    def __init__(self, env: Mapping[str, str], roles: Mapping[str, list[str]]) -> None:
        self.env = dict(env)
        self.roles = dict(roles)  # name -> gnomon arguments
        self.current: dict[str, GnomonProcess] = {}
        self.retired: list[GnomonProcess] = []
        self.killed_pids: set[int] = set()
        self.kills: Counter[str] = Counter()

    def start(self) -> None:
        for name, args in self.roles.items():
            self.current[name] = GnomonProcess(args, self.env)
        for process in self.current.values():
            process.wait_for_log("ready", timeout=90)

    def kill_and_restart(self, name: str) -> None:
        """kill -9 the process, then start its replacement at once (no drain, no goodbye)."""
        victim = self.current[name]
        self.killed_pids.add(victim.pid)
        victim.kill()
        self.retired.append(victim)
        self.kills[name.split(".")[0]] += 1
        self.current[name] = GnomonProcess(self.roles[name], self.env)

    def killed(self, worker_id: str) -> bool:
        """Did this worker id belong to a process we killed? (ids are host:pid:random)"""
        parts = worker_id.split(":")
        return len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) in self.killed_pids

    def crashed(self) -> list[str]:
        """Processes that died without being killed by us (they must not)."""
        return [f"{name} exited {p.proc.returncode}:\n{p.log[-3000:]}" for name, p in self.current.items()
                if not p.alive()]

    def close(self) -> None:
        for process in [*self.current.values(), *self.retired]:
            process.close()


class Load:
    """Submits the jobs in batches through the API. Every job has an idempotency key, so a batch that an outage
    refused, or whose answer was lost, is simply sent again until the API answers 201."""

    def __init__(self, api: httpx.AsyncClient, total: int, batch: int, seed: int) -> None:
        self.api = api
        self.total = total
        self.batch = batch
        self.rng = random.Random(seed)
        self.ids: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.refused = 0  # answers other than 201 (5xx during the outages) and lost answers

    def job(self, n: int) -> dict[str, Any]:
        roll = self.rng.random()
        job: dict[str, Any] = {"task": "noop", "idempotency_key": f"fault-{n}", "payload": {"n": n}}
        if roll < 0.10:
            job |= {"task": "fail", "max_attempts": 3, "backoff": QUICK_BACKOFF}
        elif roll < 0.15:
            job |= {"task": "sleep", "payload": {"n": n, "seconds": round(self.rng.uniform(0.2, 1.5), 2)}}
        if self.rng.random() < 0.3:
            job["delay_seconds"] = round(self.rng.uniform(0.5, 20), 2)
        self.kinds[job["task"] + (" delayed" if "delay_seconds" in job else "")] += 1
        return job

    async def run(self, spacing: float, deadline: float) -> None:
        for start in range(0, self.total, self.batch):
            jobs = [self.job(n) for n in range(start, min(start + self.batch, self.total))]
            self.ids += await self._send(jobs, deadline)
            await asyncio.sleep(spacing)

    async def _send(self, jobs: list[dict[str, Any]], deadline: float) -> list[str]:
        while True:
            try:
                response = await self.api.post("/v1/jobs/batch", json={"jobs": jobs})
                if response.status_code == 201:
                    return list(response.json()["ids"])
                assert response.status_code >= 500, f"batch refused: {response.status_code} {response.text}"
            except httpx.TransportError:
                pass
            self.refused += 1
            assert time.monotonic() < deadline, "the API never took a batch back after the outages"
            await asyncio.sleep(0.5)


async def fetch(url: str, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row, autocommit=True) as conn:
        return await (await conn.execute(query, params)).fetchall()  # type: ignore[arg-type]


async def counts(url: str) -> dict[str, int]:
    rows = await fetch(url, "SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return {row["state"]: row["n"] for row in rows}


async def until_terminal(url: str, deadline: float) -> dict[str, int]:
    """Wait until every job is terminal; AssertionError with the counts at the deadline."""
    while True:
        found = await counts(url)
        if not set(found) - set(TERMINAL):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still not terminal at the deadline: {found}")
        await asyncio.sleep(0.5)


ORPHAN_LEDGER: Final = """
SELECT o.schedule_id, o.scheduled_for, o.job_id FROM occurrences o
LEFT JOIN jobs j ON j.id = o.job_id AND j.schedule_id = o.schedule_id AND j.scheduled_for = o.scheduled_for
WHERE o.fate = 'fired' AND j.id IS NULL"""
UNRECORDED_FIRINGS: Final = """
SELECT j.id, j.schedule_id, j.scheduled_for FROM jobs j
LEFT JOIN occurrences o ON o.job_id = j.id AND o.fate = 'fired'
WHERE j.schedule_id IS NOT NULL AND o.id IS NULL"""
TWICE_IN_JOBS: Final = """
SELECT schedule_id, scheduled_for, count(*) AS n FROM jobs WHERE schedule_id IS NOT NULL
GROUP BY 1, 2 HAVING count(*) > 1"""
TWICE_IN_LEDGER: Final = """
SELECT schedule_id, scheduled_for, count(*) AS n FROM occurrences WHERE fate = 'fired'
GROUP BY 1, 2 HAVING count(*) > 1"""
FINISHED_WITHOUT_RUNS: Final = """
SELECT id::text AS id, state, attempt FROM jobs j
WHERE state IN ('succeeded', 'failed') AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job_id = j.id)"""
RUNS: Final = "SELECT r.job_id::text AS job_id, r.attempt, r.worker_id, r.outcome, r.started_at, r.finished_at, " \
              "j.task, j.state, j.attempt AS job_attempt FROM runs r JOIN jobs j ON j.id = r.job_id " \
              "ORDER BY r.job_id, r.id"


def fuzz_api(base_url: str, token: str, har: Path, examples: int, seed: int, timeout: float) -> str:
    """Schemathesis against the API's own OpenAPI document, every phase, a bounded number of examples per
    operation; every request and answer lands in the HAR file. Returns its console output."""
    binary = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [str(binary), "run", f"{base_url}/schema/openapi.json", "--header", f"Authorization: Bearer {token}",
         "--checks", "not_a_server_error", "--max-examples", str(examples), "--seed", str(seed),
         "--request-timeout", "30", "--generation-database", "none", "--continue-on-failure", "--no-color",
         "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=har.parent)
    return done.stdout + done.stderr


def har_entries(har: Path) -> list[dict[str, Any]]:
    """(method, url, status, response text) of every exchange in a HAR file."""
    entries = json.loads(har.read_text())["log"]["entries"]
    return [{"method": e["request"]["method"], "url": e["request"]["url"], "status": e["response"]["status"],
             "text": e["response"].get("content", {}).get("text") or ""} for e in entries]


def accepted_ids(entries: list[dict[str, Any]]) -> set[str]:
    """Ids of what accepted (2xx) writes created or named: `id` and `ids` of their JSON answers."""
    found: set[str] = set()
    for entry in entries:
        if entry["method"] == "GET" or not 200 <= entry["status"] < 300 or not entry["text"].startswith("{"):
            continue
        body = json.loads(entry["text"])
        found |= {body["id"]} if isinstance(body.get("id"), str) else set()
        found |= {i for i in body.get("ids", []) if isinstance(i, str)}
    return found


async def send_all(api: httpx.AsyncClient, requests: list[tuple[str, tuple[str, str, dict[str, Any]]]]
                   ) -> tuple[dict[str, int | str], set[str]]:
    """Send each request: its marker -> status (or the transport error, which must not happen either), and the
    ids that the accepted ones answered with."""
    answers: dict[str, int | str] = {}
    exchanges = []
    for mark, (method, path, kwargs) in requests:
        try:
            response = await api.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            answers[mark] = f"{method} {path[:80]}: {exc!r}"
            continue
        answers[mark] = response.status_code
        exchanges.append({"method": method, "status": response.status_code, "text": response.text})
    return answers, accepted_ids(exchanges)


STORED_MARKS: Final = """
SELECT queue AS mark FROM jobs WHERE queue LIKE 'nasty-%%'
UNION ALL SELECT name FROM schedules WHERE name LIKE 'nasty-%%'"""
UNACCOUNTED_JOBS: Final = """
SELECT id::text AS id, task, queue, schedule_id::text AS schedule_id, scheduled_for FROM jobs
WHERE NOT (id::text = ANY(%(ids)s)) AND (scheduled_for IS NULL
      OR (schedule_id IS NOT NULL AND NOT (schedule_id::text = ANY(%(ids)s))))"""
UNACCOUNTED_SCHEDULES: Final = "SELECT id::text AS id, name FROM schedules WHERE NOT (id::text = ANY(%(ids)s))"
