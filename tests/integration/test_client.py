"""The Python client (sync and async) against a real `gnomon dev` process: every route of SPEC §4, idempotency,
problems as GnomonError, and Unreachable when nothing listens."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.http.client import AsyncGnomonClient, GnomonClient, GnomonError, Retry, Unreachable
from tests.integration.cluster import free_port
from tests.integration.dev_server import TOKEN, running_dev

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_dev(queues="default,it-run,it-batch,it-async") as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[GnomonClient]:
    with GnomonClient(url, TOKEN) as gnomon:
        yield gnomon


def until(probe: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while not done(value := probe()):
        assert time.monotonic() < end, f"{what}; last seen {value!r}"
        time.sleep(0.05)
    return value


def name(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(4)}"


def test_a_job_runs_and_its_history_is_read_back(client: GnomonClient) -> None:
    assert client.health()["status"] == "ok" and client.ready()["status"] == "ready"
    queue = "it-run"
    job = client.submit("noop", {"n": 1}, queue=queue, priority=5)
    assert job["queue"] == queue and job["priority"] == 5 and job["payload"] == {"n": 1}
    done = until(lambda: client.get_job(job["id"]), lambda j: j["state"] == "succeeded", "the job never ran")
    [run] = client.job_runs(job["id"])
    assert run["outcome"] == "succeeded" and run["attempt"] == 1 and done["finished_at"].endswith("Z")
    assert queue in {q["queue"] for q in client.list_queues()}


def test_a_repeated_idempotency_key_returns_the_first_job(client: GnomonClient, url: str) -> None:
    key = name("order")
    first = client.submit("noop", idempotency_key=key)
    assert client.submit("noop", idempotency_key=key)["id"] == first["id"]
    with GnomonClient(url, TOKEN, idempotency_keys=True) as keyed:
        one, two = keyed.submit("noop"), keyed.submit("noop")
    assert one["id"] != two["id"] and one["idempotency_key"] != two["idempotency_key"]


def test_a_batch_is_listed_back_page_by_page(client: GnomonClient) -> None:
    queue = "it-batch"
    ids = client.submit_batch([{"task": "noop", "queue": queue, "payload": {"i": i}} for i in range(25)])
    assert len(ids) == 25
    page = client.list_jobs(queue=queue, limit=10)
    assert len(page["items"]) == 10 and page["next_cursor"] is not None
    assert {j["id"] for j in client.iter_jobs(queue=queue, limit=10)} == set(ids)
    until(lambda: client.list_jobs(queue=queue, state="succeeded", limit=100)["items"], lambda items: len(items) == 25,
          "the batch never finished")


def test_cancel_and_retry_follow_the_state_machine(client: GnomonClient) -> None:
    later = client.submit("noop", delay_seconds=3600)
    assert later["state"] == "scheduled"
    assert client.cancel_job(later["id"])["state"] == "cancelled"
    with pytest.raises(GnomonError) as raised:
        client.cancel_job(later["id"])
    assert raised.value.status == 409
    assert client.retry_job(later["id"])["state"] == "queued"
    failing = client.submit("fail", max_attempts=1)
    until(lambda: client.get_job(failing["id"]), lambda j: j["state"] == "failed", "the job never failed")
    assert client.retry_job(failing["id"])["state"] == "queued"


def test_every_schedule_operation(client: GnomonClient) -> None:
    label = name("nightly")
    created = client.create_schedule(label, {"task": "noop"}, cron="0 3 * * *", timezone="Europe/Paris")
    assert created["name"] == label and created["next_fire_at"] is not None
    assert client.get_schedule(label)["id"] == created["id"]
    assert label in {s["name"] for s in client.list_schedules(limit=1000)["items"]}
    preview = client.preview_schedule(label, 3)
    assert len(preview) == 3 and all(t["local"].endswith(("+01:00", "+02:00")) for t in preview)
    assert client.pause_schedule(label, note="maintenance")["pause_note"] == "maintenance"
    assert client.resume_schedule(label)["paused"] is False
    fired = client.trigger_schedule(label)
    assert fired["schedule_id"] == created["id"]
    assert client.update_schedule(label, {"cron": "30 4 * * *"})["cron"] == "30 4 * * *"
    start = datetime.now(UTC) - timedelta(days=2)
    assert len(client.backfill_schedule(label, start, start + timedelta(days=1))) == 1
    assert client.schedule_occurrences(label, limit=10)["items"]
    with pytest.raises(GnomonError) as duplicate:
        client.create_schedule(label, {"task": "noop"}, interval_seconds=60)
    assert duplicate.value.status == 409
    client.delete_schedule(label)
    with pytest.raises(GnomonError) as gone:
        client.get_schedule(label)
    assert gone.value.status == 404


def test_problems_become_gnomon_errors(client: GnomonClient, url: str) -> None:
    with pytest.raises(GnomonError) as invalid:
        client.submit("noop", priority=12)
    assert invalid.value.status == 422 and invalid.value.problem["errors"][0]["field"] == "priority"
    with pytest.raises(GnomonError) as unknown:
        client.get_job("01a220b5-9e5f-73cc-90e6-aaa82fbb90be")
    assert unknown.value.status == 404
    with GnomonClient(url, "wrong-token") as stranger, pytest.raises(GnomonError) as refused:
        stranger.list_jobs()
    assert refused.value.status == 401


def test_nothing_listening_is_unreachable_after_the_retries() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with GnomonClient(nowhere, TOKEN, retry=Retry(retries=2, first=0.01)) as lost, pytest.raises(Unreachable) as raised:
        lost.get_job("anything")
    assert raised.value.status == 0 and "ConnectError" in str(raised.value)


async def test_the_async_client_does_the_same(url: str) -> None:
    queue = "it-async"
    async with AsyncGnomonClient(url, TOKEN, idempotency_keys=True) as client:
        assert (await client.ready())["status"] == "ready"
        job = await client.submit("noop", {"a": 1}, queue=queue)
        ids = await client.submit_batch([{"task": "noop", "queue": queue} for _ in range(5)])
        listed = [j["id"] async for j in client.iter_jobs(queue=queue, limit=2)]
        assert set(listed) == {job["id"], *ids}
        later = await client.submit("noop", queue=queue, delay_seconds=600)
        assert (await client.cancel_job(later["id"]))["state"] == "cancelled"
        assert (await client.get_job(later["id"]))["state"] == "cancelled"
        label = name("every-minute")
        await client.create_schedule(label, {"task": "noop"}, interval_seconds=60)
        assert len(await client.preview_schedule(label, 5)) == 5
        await client.delete_schedule(label)
        with pytest.raises(GnomonError) as raised:
            await client.submit("no-such-task")
        assert raised.value.status == 422
        assert queue in {q["queue"] for q in await client.list_queues()}
