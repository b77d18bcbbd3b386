"""`gnomon jobs ...` and `gnomon schedules ...` as a user runs them: subprocesses against a real `gnomon dev`,
with GNOMON_URL and GNOMON_TOKEN in their environment."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import free_port
from tests.integration.dev_server import TOKEN, running_dev
from tests.integration.processes import REPO


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_dev() as base:
        yield base


def gnomon(url: str, *args: str, token: str = TOKEN, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNOMON_")}
    env |= {"GNOMON_URL": url, "GNOMON_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "entrypoints.cli", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, check=False)


def ok(url: str, *args: str) -> str:
    done = gnomon(url, *args)
    assert done.returncode == 0, f"gnomon {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}"
    return done.stdout


def as_json(url: str, *args: str) -> Any:
    return json.loads(ok(url, *args, "--json"))


def test_ten_thousand_jobs_submitted_in_one_command_are_waited_for_with_a_progress_bar(
        url: str, tmp_path: Path) -> None:
    ids = ok(url, "jobs", "submit", "--task", "noop", "--payload", '{"batch": 1}', "--count", "10000").split()
    assert len(ids) == len(set(ids)) == 10_000
    ids_file = tmp_path / "ids"
    ids_file.write_text("\n".join(ids) + "\n")
    waited = gnomon(url, "jobs", "wait", "--ids-file", str(ids_file), "--timeout", "600", timeout=660)
    assert waited.returncode == 0, waited.stderr[-3000:]
    last = waited.stderr.strip().splitlines()[-1]
    assert last.startswith("[" + "#" * 30 + "] 10000/10000 done") and "10000 succeeded" in last, waited.stderr


def test_wait_exits_1_and_names_the_job_that_failed(url: str) -> None:
    good = as_json(url, "jobs", "submit", "--task", "noop")["id"]
    bad = as_json(url, "jobs", "submit", "--task", "fail", "--max-attempts", "1")["id"]
    waited = gnomon(url, "jobs", "wait", good, bad)
    assert waited.returncode == 1, waited.stderr
    assert waited.stdout.split() == [bad, "failed"]


def test_wait_gives_up_after_its_timeout_with_exit_3(url: str) -> None:
    later = as_json(url, "jobs", "submit", "--task", "noop", "--delay", "3600")["id"]
    waited = gnomon(url, "jobs", "wait", later, "--timeout", "0.5", "--json")
    assert waited.returncode == 3
    assert json.loads(waited.stdout) == {"total": 1, "states": {"scheduled": 1}, "not_succeeded": [],
                                         "timed_out": True}


def test_get_list_cancel_and_retry(url: str) -> None:
    key = f"cli-{secrets.token_hex(4)}"
    job = as_json(url, "jobs", "submit", "--task", "noop", "--delay", "3600", "--priority", "3",
                  "--idempotency-key", key)
    assert job["state"] == "scheduled" and job["priority"] == 3 and job["idempotency_key"] == key
    assert as_json(url, "jobs", "submit", "--task", "noop", "--idempotency-key", key)["id"] == job["id"]
    cancelled = ok(url, "jobs", "cancel", job["id"])
    assert cancelled.splitlines()[0].split()[:4] == ["ID", "TASK", "QUEUE", "STATE"]
    assert cancelled.splitlines()[1].split()[:4] == [job["id"], "noop", "default", "cancelled"]
    again = gnomon(url, "jobs", "cancel", job["id"])
    assert again.returncode == 1 and "409" in again.stderr
    assert as_json(url, "jobs", "retry", job["id"])[0]["state"] == "queued"
    shown = as_json(url, "jobs", "get", job["id"], "--runs")
    assert shown["id"] == job["id"] and isinstance(shown["runs"], list)
    table = ok(url, "jobs", "get", job["id"])
    assert f"id                 {job['id']}" in table.splitlines()
    listed = as_json(url, "jobs", "list", "--limit", "1000")
    assert job["id"] in {j["id"] for j in listed["items"]}


def test_schedule_commands(url: str) -> None:
    label = f"cli-{secrets.token_hex(4)}"
    created = as_json(url, "schedules", "create", "--name", label, "--task", "noop", "--cron", "0 3 * * *",
                      "--timezone", "Europe/Paris", "--overlap-policy", "skip")
    assert created["timezone"] == "Europe/Paris" and created["overlap_policy"] == "skip"
    row = next(line for line in ok(url, "schedules", "list").splitlines() if label in line)
    assert row.split()[:4] == [created["id"], label, "0", "3"]
    assert len(as_json(url, "schedules", "preview", label, "--count", "3")) == 3
    assert as_json(url, "schedules", "pause", label, "--note", "deploy")["paused"] is True
    assert as_json(url, "schedules", "resume", label)["paused"] is False
    fired = as_json(url, "schedules", "trigger", label)
    assert fired["schedule_id"] == created["id"] and fired["task"] == "noop"
    assert as_json(url, "schedules", "get", created["id"])["name"] == label
    assert ok(url, "schedules", "delete", label).strip() == f"deleted {label}"
    gone = gnomon(url, "schedules", "get", label)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_errors_are_reported_with_their_exit_codes(url: str) -> None:
    refused = gnomon(url, "jobs", "list", token="wrong")
    assert refused.returncode == 1 and "401" in refused.stderr
    invalid = gnomon(url, "jobs", "submit", "--task", "noop", "--priority", "12")
    assert invalid.returncode == 1 and "priority" in invalid.stderr
    assert gnomon(url, "jobs", "submit", "--task", "noop", "--payload", "[1]").returncode == 2
    assert gnomon(url, "jobs", "wait").returncode == 2
    nowhere = gnomon(f"http://127.0.0.1:{free_port()}", "jobs", "list")
    assert nowhere.returncode == 1 and "cannot reach the API" in nowhere.stderr
