"""Prometheus metrics of real processes on PostgreSQL and Redis: `gnomon worker` and `gnomon scheduler` serve
/metrics, /healthz and /readyz on GNOMON_METRICS_PORT (0: a free port, announced in the ready line), and
`gnomon api` serves /metrics beside its routes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.client import GnomonClient
from application.scheduler import TOTALS_EVERY
from tests.integration.cluster import free_port
from tests.integration.http_stack import delete_prefix, eventually
from tests.integration.processes import GnomonProcess, gnomon, gnomon_env
from tests.integration.stack import new_prefix

TOKEN = "metrics-token"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(process: GnomonProcess) -> str:
    process.wait_for_log("ready:")
    found = re.search(r"metrics on (http://\S+/metrics)", process.log)
    assert found, process.log[-2000:]
    return found.group(1)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def metric(name: str, **labels: str) -> Callable[[Samples], float | None]:
    return lambda samples: samples.get((name, frozenset(labels.items())))


def settled(url: str, read: Callable[[Samples], Any], expected: Any, what: str) -> None:
    """The metric reaches `expected` (outcomes are counted just after they are stored)."""
    eventually(lambda: read(scrape(url)), lambda value: value == expected, what, timeout=20)


def test_worker_scheduler_and_api_serve_their_metrics(pg_url: str, redis_url: str) -> None:
    prefix, port = new_prefix(), free_port()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, api_tokens=TOKEN, port=port, metrics_port=0)
    try:
        with gnomon("api", env=env) as api, gnomon("scheduler", env=env) as scheduler, \
                gnomon("worker", "--queues", "metered", env=env) as worker, \
                GnomonClient(f"http://127.0.0.1:{port}", TOKEN) as client:
            api.wait_for_log("ready:")
            worker_metrics, scheduler_metrics = metrics_url(worker), metrics_url(scheduler)
            ids = client.submit_batch([{"task": "noop", "queue": "metered"} for _ in range(12)]
                                      + [{"task": "fail", "queue": "metered", "max_attempts": 1} for _ in range(3)])
            eventually(lambda: [client.get_job(i)["state"] for i in ids],
                       lambda states: states == ["succeeded"] * 12 + ["failed"] * 3, "the jobs never finished")
            _check_worker(worker_metrics)
            _check_scheduler(scheduler_metrics)
            _check_api(f"http://127.0.0.1:{port}/metrics")
            assert worker.terminate() == 0 and scheduler.terminate() == 0 and api.terminate() == 0
    finally:
        delete_prefix(redis_url, prefix)


def _check_worker(url: str) -> None:
    finished = "gnomon_jobs_finished_total"
    settled(url, metric(finished, queue="metered", task="noop", outcome="succeeded"), 12, "12 successes counted")
    settled(url, metric(finished, queue="metered", task="fail", outcome="failed"), 3, "3 failures counted")
    samples = scrape(url)
    assert metric("gnomon_jobs_claimed_total", queue="metered")(samples) == 15
    assert metric("gnomon_job_run_duration_seconds_count", task="noop")(samples) == 12
    assert metric("gnomon_job_lateness_seconds_count", queue="metered")(samples) == 15
    base = url.removesuffix("/metrics")
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready",
                                                         "checks": {"postgresql": True, "redis": True}}
    assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{base}/nothing", timeout=10).status_code == 404


def _check_scheduler(url: str) -> None:
    # Jobs in flight are counted at every refresh (5 s), every state once a minute (TOTALS_EVERY).
    settled(url, metric("gnomon_queue_jobs", queue="metered", state="running"), 0, "the queue's in-flight gauges")
    depth = metric("gnomon_queue_jobs", queue="metered", state="succeeded")
    eventually(lambda: depth(scrape(url)), lambda value: value == 12,
               "the queue gauge (every state once a minute) shows the 12 successes", timeout=TOTALS_EVERY + 20)
    samples = scrape(url)
    assert (metric("gnomon_scheduler_tick_duration_seconds_count")(samples) or 0) > 0
    assert metric("gnomon_queue_jobs", queue="metered", state="failed")(samples) == 3
    assert metric("gnomon_queue_oldest_queued_age_seconds", queue="metered")(samples) == 0


def _check_api(url: str) -> None:
    samples = scrape(url)  # open: no token
    assert metric("gnomon_jobs_submitted_total", queue="metered", task="noop")(samples) == 12
    assert metric("gnomon_jobs_submitted_total", queue="metered", task="fail")(samples) == 3
    requests = "gnomon_http_request_duration_seconds_count"
    assert metric(requests, method="POST", route="/v1/jobs/batch", status="201")(samples) == 1
    assert (metric(requests, method="GET", route="/v1/jobs/{job_id}", status="200")(samples) or 0) >= 15
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)



def test_an_api_of_several_processes_reports_their_sum(pg_url: str, redis_url: str) -> None:
    """`gnomon api --workers 2`: whichever process answers a scrape reports the jobs both took, and a process
    that dies (uvicorn starts another) leaves its counts in the sum."""
    prefix, port = new_prefix(), free_port()
    env = gnomon_env(pg_url, redis_url, prefix=prefix, api_tokens=TOKEN, port=port)
    submitted = metric("gnomon_jobs_submitted_total", queue="spread", task="noop")
    posts = metric("gnomon_http_request_duration_seconds_count", method="POST", route="/v1/jobs", status="201")
    url = f"http://127.0.0.1:{port}/metrics"

    def both() -> tuple[float | None, float | None]:
        samples = scrape(url)
        return submitted(samples), posts(samples)

    try:
        with gnomon("api", "--workers", "2", env=env) as api:
            try:
                first, second = _api_pids(api, 2)
                _submit_past(first, port, 7)  # taken by the second process
                _submit_past(second, port, 5)  # by the first (or its replacement, if uvicorn lost patience)
                assert [both() for _ in range(10)] == [(12, 12)] * 10  # a counter, a histogram
                assert _family_names(url) == sorted(set(_family_names(url)))  # each family once
                directory = _shared_directory(api)
                assert directory.is_dir()
                os.kill(first, signal.SIGKILL)
                _api_pids(api, 3)  # uvicorn replaced the dead process
                assert [both() for _ in range(10)] == [(12, 12)] * 10
                assert api.terminate() == 0
                assert not directory.exists()
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(api.pid, signal.SIGKILL)  # uvicorn's workers outlive a supervisor that is killed
    finally:
        delete_prefix(redis_url, prefix)


def _family_names(url: str) -> list[str]:
    return sorted(family.name for family in text_string_to_metric_families(httpx.get(url, timeout=10).text))


def _api_pids(api: GnomonProcess, n: int) -> list[int]:
    """The pids of the first `n` API processes that logged their ready line."""
    pattern = re.compile(r"ready: api \(process (\d+)\)")
    eventually(lambda: pattern.findall(api.log), lambda found: len(found) >= n, f"{n} API processes ready")
    return [int(pid) for pid in pattern.findall(api.log)[:n]]


def _submit_past(stopped: int, port: int, n: int) -> None:
    """Submit `n` jobs while process `stopped` is stopped, so that another one accepts the connection. (uvicorn
    kills a worker that does not answer its health check for 5 s; one connection keeps this much shorter.)"""
    os.kill(stopped, signal.SIGSTOP)
    try:
        with GnomonClient(f"http://127.0.0.1:{port}", TOKEN) as client:
            for _ in range(n):
                client.submit("noop", queue="spread")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)


def _shared_directory(api: GnomonProcess) -> Path:
    found = re.search(r"metrics of the API processes are summed in (\S+)", api.log)
    assert found, api.log[-2000:]
    return Path(found.group(1))
