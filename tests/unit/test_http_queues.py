"""PATCH /v1/queues/{name} and the settings in GET /v1/queues (SPEC §6), on the memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from domain.job import Hold
from tests.unit.http_support import PROBLEM, Api, running_api, submit


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as running:
        yield running


async def queues(api: Api) -> dict[str, dict[str, Any]]:
    response = await api.client.get("/v1/queues")
    assert response.status_code == 200, response.text
    return {q["queue"]: q for q in response.json()["items"]}


async def test_a_patch_changes_only_the_fields_given_and_get_shows_them(api: Api) -> None:
    await submit(api)
    assert (await queues(api))["default"] | {"counts": None} == {
        "queue": "default", "counts": None, "oldest_queued_at": "2026-03-02T12:00:00Z",
        "oldest_queued_age_seconds": 0.0, "finished_last_minute": 0, "held": {"concurrency_key": 0, "queue": 0},
        "max_running": None, "max_per_second": None, "paused": False}

    first = await api.client.patch("/v1/queues/default", json={"max_running": 5, "max_per_second": 2.5})
    second = await api.client.patch("/v1/queues/default", json={"paused": True})
    cleared = await api.client.patch("/v1/queues/mail", json={"max_per_second": None})

    assert first.status_code == 200, first.text
    assert first.json() == {"queue": "default", "max_running": 5, "max_per_second": 2.5, "paused": False,
                            "updated_at": "2026-03-02T12:00:00Z"}
    assert second.json() | {"updated_at": None} == {"queue": "default", "max_running": 5, "max_per_second": 2.5,
                                                    "paused": True, "updated_at": None}
    assert cleared.status_code == 200 and cleared.json()["max_per_second"] is None
    listed = await queues(api)
    assert (listed["default"]["max_running"], listed["default"]["max_per_second"], listed["default"]["paused"]) \
        == (5, 2.5, True)
    assert listed["mail"]["counts"]["queued"] == 0 and listed["mail"]["paused"] is False


async def test_a_resume_through_the_api_dispatches_the_held_jobs(api: Api) -> None:
    await api.client.patch("/v1/queues/default", json={"paused": True})
    job = await submit(api)
    dispatcher = api.container.adapters.dispatcher()
    assert await dispatcher.pop(["default"], limit=10, timeout=0) == [job["id"]]
    assert await api.jobs.claim([job["id"]], worker_id="w", now=api.clock.now(), lease_seconds=30) == []
    assert api.jobs.rows[job["id"]].held_for is Hold.QUEUE

    resumed = await api.client.patch("/v1/queues/default", json={"paused": False})

    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert await dispatcher.pop(["default"], limit=10, timeout=0) == [job["id"]]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/queues/default", {"max_running": 0}, "max_running"),
    ("/v1/queues/default", {"max_running": -1}, "max_running"),
    ("/v1/queues/default", {"max_running": 2.5}, "max_running"),
    ("/v1/queues/default", {"max_running": "3"}, "max_running"),
    ("/v1/queues/default", {"max_running": 10**7}, "max_running"),
    ("/v1/queues/default", {"max_per_second": 0}, "max_per_second"),
    ("/v1/queues/default", {"max_per_second": -0.5}, "max_per_second"),
    ("/v1/queues/default", {"max_per_second": "fast"}, "max_per_second"),
    ("/v1/queues/default", {"paused": None}, "paused"),
    ("/v1/queues/default", {"paused": "yes"}, "paused"),
    ("/v1/queues/default", {"max_concurrency": 3}, "max_concurrency"),
    ("/v1/queues/no%20spaces", {"paused": True}, "queue"),
    ("/v1/queues/" + "q" * 65, {"paused": True}, "queue"),
])
async def test_bad_settings_are_a_422_naming_the_field_and_change_nothing(api: Api, path: str, body: Any,
                                                                          field: str) -> None:
    response = await api.client.patch(path, json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert field in {e["field"] for e in response.json()["errors"]}
    assert await api.container.adapters.queue_settings().all() == []


async def test_a_patch_needs_a_json_object_and_a_token(api: Api) -> None:
    not_json = await api.client.patch("/v1/queues/default", content=b"{", headers={"content-type": "application/json"})
    wrong_type = await api.client.patch("/v1/queues/default", content=b"paused=1",
                                        headers={"content-type": "text/plain"})
    no_body = await api.client.patch("/v1/queues/default")
    api.client.headers.pop("Authorization")
    anonymous = await api.client.patch("/v1/queues/default", json={"paused": True})

    assert (not_json.status_code, wrong_type.status_code, no_body.status_code, anonymous.status_code) \
        == (400, 415, 400, 401)
    assert all(r.headers["content-type"] == PROBLEM for r in (not_json, wrong_type, no_body, anonymous))
