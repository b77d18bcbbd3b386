"""The API's /metrics: open, in Prometheus text format, with request durations by method, route template and
status, and whatever else the process's registry holds (the use cases' counters)."""

from __future__ import annotations

from dependency_injector import providers
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from adapters.http.app import create_app
from adapters.memory.clock import FrozenClock
from adapters.metrics.prometheus import PrometheusMetrics
from entrypoints.container import MemoryAdapters, UseCases
from tests.unit.http_support import AUTH, T0, TOKEN, KnownTasks, job_body


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests(found: dict[tuple[str, frozenset[tuple[str, str]]], float], method: str, route: str,
             status: str) -> float | None:
    labels = frozenset({"method": method, "route": route, "status": status}.items())
    return found.get(("gnomon_http_request_duration_seconds_count", labels))


async def test_metrics_are_open_and_count_requests_by_route_template_and_status() -> None:
    registry = CollectorRegistry()
    container = UseCases(adapters=MemoryAdapters(tasks=providers.Object(KnownTasks())),
                         metrics=providers.Object(PrometheusMetrics(registry)))
    container.clock.override(providers.Object(FrozenClock(T0)))
    app = create_app(container, tokens=[TOKEN], registry=registry)
    async with AsyncTestClient(app) as client:
        created = (await client.post("/v1/jobs", json=job_body(queue="mail"), headers=AUTH)).json()
        for _ in range(2):
            assert (await client.get(f"/v1/jobs/{created['id']}", headers=AUTH)).status_code == 200
        assert (await client.get("/v1/jobs/01a220b5-9e5f-73cc-90e6-aaa82fbb90be", headers=AUTH)).status_code == 404
        assert (await client.get("/v1/jobs")).status_code == 401
        assert (await client.post("/v1/jobs", json={"task": 1}, headers=AUTH)).status_code == 422
        response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = scrape(response.text)
    assert requests(found, "POST", "/v1/jobs", "201") == 1
    assert requests(found, "GET", "/v1/jobs/{job_id}", "200") == 2
    assert requests(found, "GET", "/v1/jobs/{job_id}", "404") == 1
    assert requests(found, "GET", "/v1/jobs", "401") == 1
    assert requests(found, "POST", "/v1/jobs", "422") == 1
    assert found["gnomon_jobs_submitted_total", frozenset({"queue": "mail", "task": "noop"}.items())] == 1


async def test_an_app_without_a_registry_serves_its_request_metrics_alone() -> None:
    container = UseCases(adapters=MemoryAdapters(tasks=providers.Object(KnownTasks())))
    async with AsyncTestClient(create_app(container, tokens=[TOKEN])) as client:
        await client.get("/healthz")
        text = (await client.get("/metrics")).text
    assert requests(scrape(text), "GET", "/healthz", "200") == 1
    assert "gnomon_jobs_submitted" not in text
