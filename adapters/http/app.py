"""The Litestar app of SPEC §4: one factory wiring the controllers to the use cases of a container."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from prometheus_client import CollectorRegistry

from adapters.http.auth import bearer_guard
from adapters.http.decoding import check_body
from adapters.http.health import Readiness, healthz, readyz
from adapters.http.jobs import JobsController
from adapters.http.metrics import metrics_endpoint, request_timer
from adapters.http.problems import HANDLERS
from adapters.http.queues import QueuesController
from adapters.http.schedules import SchedulesController
from adapters.http.ui import ui_router, ui_templates

MAX_BODY_BYTES: Final = 16 * 1024 * 1024


async def _no_checks() -> dict[str, bool]:
    return {}


def create_app(container: Any, *, tokens: Sequence[str], readiness: Readiness | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, registry: CollectorRegistry | None = None) -> Litestar:
    """The API over `container` (entrypoints' UseCases: each provider call makes a use case).

    `tokens` are the bearer tokens /v1 accepts (at least one); `readiness` returns named checks for /readyz;
    `registry` holds the process's metrics, served at /metrics with the API's request durations added to it.
    """
    registry = CollectorRegistry() if registry is None else registry
    if not any(tokens):
        raise ValueError("the API needs at least one bearer token")
    # One Provide per use case, written out: a loop over names would bind every lambda to the last one.
    use_cases = {
        "now": Provide(lambda: container.clock().now(), sync_to_thread=False),
        "submit_jobs": Provide(lambda: container.submit_jobs(), sync_to_thread=False),
        "get_job": Provide(lambda: container.get_job(), sync_to_thread=False),
        "list_jobs": Provide(lambda: container.list_jobs(), sync_to_thread=False),
        "job_runs": Provide(lambda: container.job_runs(), sync_to_thread=False),
        "cancel_job": Provide(lambda: container.cancel_job(), sync_to_thread=False),
        "retry_job": Provide(lambda: container.retry_job(), sync_to_thread=False),
        "queue_overview": Provide(lambda: container.queue_overview(), sync_to_thread=False),
        "update_queue": Provide(lambda: container.update_queue(), sync_to_thread=False),
        "create_schedule": Provide(lambda: container.create_schedule(), sync_to_thread=False),
        "update_schedule": Provide(lambda: container.update_schedule(), sync_to_thread=False),
        "delete_schedule": Provide(lambda: container.delete_schedule(), sync_to_thread=False),
        "pause_schedule": Provide(lambda: container.pause_schedule(), sync_to_thread=False),
        "resume_schedule": Provide(lambda: container.resume_schedule(), sync_to_thread=False),
        "trigger_schedule": Provide(lambda: container.trigger_schedule(), sync_to_thread=False),
        "backfill_schedule": Provide(lambda: container.backfill_schedule(), sync_to_thread=False),
        "preview_schedule": Provide(lambda: container.preview_schedule(), sync_to_thread=False),
        "get_schedule": Provide(lambda: container.get_schedule(), sync_to_thread=False),
        "list_schedules": Provide(lambda: container.list_schedules(), sync_to_thread=False),
        "schedule_occurrences": Provide(lambda: container.schedule_occurrences(), sync_to_thread=False),
        "queue_throughput": Provide(lambda: container.queue_throughput(), sync_to_thread=False),
        "retry_jobs": Provide(lambda: container.retry_jobs(), sync_to_thread=False),
        "cancel_jobs": Provide(lambda: container.cancel_jobs(), sync_to_thread=False),
    }
    v1 = Router(path="/v1", route_handlers=[JobsController, SchedulesController, QueuesController],
                dependencies=use_cases, guards=[bearer_guard(tokens)], security=[{"bearer": []}])
    return Litestar(
        route_handlers=[v1, healthz, readyz, metrics_endpoint(registry), ui_router(tokens, use_cases)],
        middleware=[request_timer(registry)],
        dependencies={"readiness": Provide(lambda: readiness or _no_checks, sync_to_thread=False)},
        exception_handlers=HANDLERS,
        before_request=check_body,
        request_max_body_size=max_body_bytes,
        openapi_config=_openapi(),
        template_config=ui_templates(),  # the /ui dashboard's pages
        logging_config=None,  # the process configures logging (entrypoints); the app must not replace it
    )


def _openapi() -> OpenAPIConfig:
    # The JSON and YAML documents are generated here; only the Swagger and ReDoc pages load scripts from a CDN.
    return OpenAPIConfig(
        title="gnomon", version="1", description="Delayed and recurring background jobs (SPEC §4).",
        path="/schema", use_handler_docstrings=True,
        render_plugins=[SwaggerRenderPlugin(path=["/", "/swagger"]), RedocRenderPlugin(), JsonRenderPlugin()],
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
    )
