"""The schedule routes of the HTTP API (SPEC §3, §4) on the memory adapters, with a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.unit.http_support import T0, Api, create_schedule, running_api, schedule_body


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as running:
        yield running


async def test_create_schedule_answers_201_with_next_fire_at_utc_and_local(api: Api) -> None:
    schedule = await create_schedule(api)

    assert schedule["name"] == "nightly" and schedule["timezone"] == "Europe/Paris"
    assert schedule["next_fire_at"] == "2026-03-03T02:00:00Z"
    assert schedule["next_fire_at_local"] == "2026-03-03T03:00:00+01:00"
    assert (schedule["misfire_policy"], schedule["overlap_policy"]) == ("run_once", "allow")
    assert (schedule["misfire_grace_seconds"], schedule["max_catchup"], schedule["jitter_seconds"]) == (60, 100, 0)
    assert schedule["job"]["task"] == "noop" and schedule["job"]["queue"] == "default"
    assert schedule["paused"] is False and schedule["pause_note"] is None and schedule["paused_until"] is None
    assert schedule["id"] in api.schedules.rows


async def test_a_duplicate_schedule_name_is_409(api: Api) -> None:
    await create_schedule(api)
    response = await api.client.post("/v1/schedules", json=schedule_body(cron="* * * * *"))
    assert response.status_code == 409
    assert "nightly" in response.json()["detail"]
    assert len(api.schedules.rows) == 1


async def test_list_and_get_by_id_or_name(api: Api) -> None:
    first = await create_schedule(api)
    second = await create_schedule(api, name="hourly", cron="0 * * * *")

    listed = (await api.client.get("/v1/schedules", params={"limit": 1})).json()
    rest = (await api.client.get("/v1/schedules", params={"cursor": listed["next_cursor"]})).json()

    assert [s["id"] for s in listed["items"] + rest["items"]] == sorted([first["id"], second["id"]], reverse=True)
    assert rest["next_cursor"] is None
    assert (await api.client.get(f"/v1/schedules/{first['id']}")).json() == first
    assert (await api.client.get("/v1/schedules/hourly")).json()["id"] == second["id"]
    assert (await api.client.get("/v1/schedules/nope")).status_code == 404


async def test_patch_recomputes_next_fire_and_merges_the_job(api: Api) -> None:
    schedule = await create_schedule(api, job={"task": "noop", "payload": {"a": 1}, "priority": 2})

    response = await api.client.patch(f"/v1/schedules/{schedule['id']}",
                                      json={"cron": "30 4 * * *", "job": {"priority": 7}})
    switched = await api.client.patch("/v1/schedules/nightly", json={"cron": None, "interval_seconds": 600})

    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["next_fire_at"] == "2026-03-03T03:30:00Z"
    assert patched["job"]["priority"] == 7
    assert (patched["job"]["task"], patched["job"]["payload"]) == ("noop", {"a": 1})
    assert switched.status_code == 200
    assert (switched.json()["cron"], switched.json()["interval_seconds"]) == (None, 600)


async def test_delete_answers_204_and_keeps_the_fired_jobs(api: Api) -> None:
    schedule = await create_schedule(api)
    fired = (await api.client.post("/v1/schedules/nightly/trigger")).json()

    response = await api.client.delete(f"/v1/schedules/{schedule['id']}")

    assert response.status_code == 204 and response.content == b""
    assert (await api.client.get(f"/v1/schedules/{schedule['id']}")).status_code == 404
    assert (await api.client.get(f"/v1/jobs/{fired['id']}")).status_code == 200


async def test_pause_with_a_note_and_until_then_resume(api: Api) -> None:
    await create_schedule(api)

    bare = await api.client.post("/v1/schedules/nightly/pause")
    paused = await api.client.post("/v1/schedules/nightly/pause",
                                   json={"note": "maintenance", "until": "2026-03-05T00:00:00+01:00"})
    api.clock.advance(3600)
    resumed = await api.client.post("/v1/schedules/nightly/resume")
    resumed_again = await api.client.post("/v1/schedules/nightly/resume")

    assert bare.status_code == 200 and bare.json()["paused"] is True
    body = paused.json()
    assert (body["paused"], body["pause_note"], body["paused_until"]) == (True, "maintenance", "2026-03-04T23:00:00Z")
    assert body["paused_at"] == "2026-03-02T12:00:00Z"
    assert resumed.status_code == 200
    assert (resumed.json()["paused"], resumed.json()["pause_note"]) == (False, None)
    assert resumed_again.status_code == 409


async def test_trigger_answers_201_with_the_job(api: Api) -> None:
    schedule = await create_schedule(api, job={"task": "sleep", "payload": {"seconds": 1}, "queue": "slow"})

    response = await api.client.post("/v1/schedules/nightly/trigger")

    assert response.status_code == 201
    job = response.json()
    assert (job["schedule_id"], job["scheduled_for"], job["task"]) == (schedule["id"], "2026-03-02T12:00:00Z", "sleep")
    assert (job["queue"], job["state"]) == ("slow", "queued")


async def test_preview_gives_utc_and_local_times(api: Api) -> None:
    await create_schedule(api)

    default = (await api.client.get("/v1/schedules/nightly/preview")).json()
    three = (await api.client.get("/v1/schedules/nightly/preview", params={"count": 3})).json()

    assert len(default) == 10
    assert three == [
        {"utc": "2026-03-03T02:00:00Z", "local": "2026-03-03T03:00:00+01:00"},
        {"utc": "2026-03-04T02:00:00Z", "local": "2026-03-04T03:00:00+01:00"},
        {"utc": "2026-03-05T02:00:00Z", "local": "2026-03-05T03:00:00+01:00"},
    ]


async def test_backfill_fires_each_occurrence_once_and_the_ledger_pages(api: Api) -> None:
    await create_schedule(api, name="hourly", cron="0 * * * *", timezone="UTC")
    window = {"start": (T0 - timedelta(hours=3)).isoformat(), "end": T0.isoformat()}

    first = await api.client.post("/v1/schedules/hourly/backfill", json=window)
    second = await api.client.post("/v1/schedules/hourly/backfill", json=window)
    page = (await api.client.get("/v1/schedules/hourly/occurrences", params={"limit": 3})).json()
    rest = (await api.client.get("/v1/schedules/hourly/occurrences", params={"cursor": page["next_cursor"]})).json()

    assert first.status_code == 200 and len(first.json()["ids"]) == 4
    assert second.status_code == 200 and second.json()["ids"] == []
    entries = page["items"] + rest["items"]
    assert rest["next_cursor"] is None
    assert {e["scheduled_for"] for e in entries} == {f"2026-03-02T{h}:00:00Z" for h in ("09", "10", "11", "12")}
    assert {e["job_id"] for e in entries} == set(first.json()["ids"])
    assert entries[0] == {"scheduled_for": entries[0]["scheduled_for"], "fate": "fired",
                          "job_id": entries[0]["job_id"], "count": 1, "until": None,
                          "recorded_at": "2026-03-02T12:00:00Z"}
