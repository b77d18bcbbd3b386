"""The Metrics port on prometheus-client, read back through the text exposition a scraper sees, and the
probe responder's answers (without a socket: the integration tests run it on one)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.metrics import request_timer
from adapters.metrics.prometheus import PrometheusMetrics, exposition, process_registry
from adapters.metrics.server import ProbeServer
from application.ports import QueueStats

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = exposition(metrics.registry)
    assert content_type.startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_counters_carry_their_labels_and_add_up() -> None:
    metrics = PrometheusMetrics(process_registry())
    metrics.jobs_submitted("mail", "send", 500)
    metrics.jobs_submitted("mail", "send", 2)
    metrics.jobs_claimed("mail", 7)
    metrics.jobs_finished("mail", "send", "succeeded", 6)
    metrics.jobs_finished("mail", "send", "timeout", 1)
    metrics.jobs_promoted(3)
    metrics.jobs_fired(4)
    metrics.lease_rescues(1)
    metrics.redispatches(2)
    found = samples(metrics)
    assert value(found, "gnomon_jobs_submitted_total", queue="mail", task="send") == 502
    assert value(found, "gnomon_jobs_claimed_total", queue="mail") == 7
    assert value(found, "gnomon_jobs_finished_total", queue="mail", task="send", outcome="succeeded") == 6
    assert value(found, "gnomon_jobs_finished_total", queue="mail", task="send", outcome="timeout") == 1
    assert value(found, "gnomon_jobs_promoted_total") == 3
    assert value(found, "gnomon_jobs_fired_total") == 4
    assert value(found, "gnomon_lease_rescues_total") == 1
    assert value(found, "gnomon_redispatches_total") == 2


def test_histograms_bucket_their_observations() -> None:
    metrics = PrometheusMetrics(process_registry())
    metrics.run_durations("send", [0.003, 0.2])
    metrics.run_durations("send", [42.0])
    metrics.lateness("mail", [1.5])
    metrics.tick_duration(0.004)
    found = samples(metrics)
    assert value(found, "gnomon_job_run_duration_seconds_count", task="send") == 3
    assert value(found, "gnomon_job_run_duration_seconds_bucket", task="send", le="0.25") == 2
    assert value(found, "gnomon_job_run_duration_seconds_sum", task="send") == pytest.approx(42.203)
    assert value(found, "gnomon_job_lateness_seconds_bucket", queue="mail", le="1.0") == 0
    assert value(found, "gnomon_job_lateness_seconds_bucket", queue="mail", le="2.5") == 1
    assert value(found, "gnomon_scheduler_tick_duration_seconds_count") == 1


def test_queue_gauges_are_replaced_by_each_report() -> None:
    metrics = PrometheusMetrics(process_registry())
    old = QueueStats(queue="old", counts={"queued": 5}, oldest_queued_at=NOW, finished_last_minute=0)
    metrics.queue_stats([old], NOW)
    mail = QueueStats(queue="mail", counts={"queued": 3, "running": 1}, oldest_queued_at=NOW - timedelta(seconds=90),
                      finished_last_minute=0)
    metrics.queue_stats([mail], NOW)
    found = samples(metrics)
    assert value(found, "gnomon_queue_jobs", queue="mail", state="queued") == 3
    assert value(found, "gnomon_queue_jobs", queue="mail", state="running") == 1
    assert value(found, "gnomon_queue_oldest_queued_age_seconds", queue="mail") == 90
    assert value(found, "gnomon_queue_jobs", queue="old", state="queued") is None


def test_each_registry_is_its_own_and_carries_process_figures() -> None:
    first, second = PrometheusMetrics(process_registry()), PrometheusMetrics(process_registry())
    first.jobs_promoted(1)
    assert value(samples(second), "gnomon_jobs_promoted_total") == 0
    assert any(name.startswith("python_gc") for name, _ in samples(second))


async def test_the_probe_answers_metrics_health_and_readiness() -> None:
    metrics = PrometheusMetrics(process_registry())
    metrics.jobs_claimed("default", 2)
    checks = {"postgresql": True, "redis": True}

    async def readiness() -> dict[str, bool]:
        return dict(checks)

    probe = ProbeServer(metrics.registry, readiness)
    status, content_type, body = await probe.answer("GET", "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'gnomon_jobs_claimed_total{queue="default"} 2.0' in body.decode()
    assert (await probe.answer("GET", "/healthz"))[0] == 200
    assert (await probe.answer("GET", "/readyz"))[0] == 200
    checks["redis"] = False
    status, _, body = await probe.answer("GET", "/readyz")
    assert status == 503 and json.loads(body) == {"status": "unavailable", "checks": checks}
    assert (await probe.answer("GET", "/nothing"))[0] == 404
    assert (await probe.answer("POST", "/metrics"))[0] == 405


async def test_a_readiness_check_that_raises_means_not_ready() -> None:
    async def broken() -> dict[str, bool]:
        raise RuntimeError("driver exploded")

    status, _, body = await ProbeServer(process_registry(), broken).answer("GET", "/readyz")
    assert status == 503 and json.loads(body)["checks"] == {"readiness": False}


def test_the_sample_grafana_dashboard_asks_only_for_metrics_that_exist() -> None:
    registry = process_registry()
    PrometheusMetrics(registry)
    request_timer(registry)
    families = {family.name for family in registry.collect()}
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    asked = {re.sub(r"_(total|bucket|count|sum)$", "", name) for expr in exprs
             for name in re.findall(r"\b((?:gnomon|process)_[a-z_]+)", expr)}
    assert asked and asked <= families, asked - families
