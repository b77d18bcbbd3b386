"""The Python client's retry and error rules, on httpx's in-process MockTransport (no network): what is sent
again and what is not, the idempotency key a retried submit keeps, and problem documents as GnomonError.
The client against a real `gnomon dev` process is tested in tests/integration/test_client.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest

from adapters.http.client import AsyncGnomonClient, GnomonClient, GnomonError, Retry, Unreachable

NO_WAIT = Retry(retries=3, first=0, most=0)
JOB = {"id": "j1", "state": "queued"}
Answer = Callable[[httpx.Request, int], httpx.Response]


class Script:
    """A transport answering each request with answer(request, n) (n from 1), which may raise."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.answer(request, len(self.seen))

    def client(self, **options: object) -> GnomonClient:
        return GnomonClient("http://gnomon.test", "tok", retry=NO_WAIT, transport=httpx.MockTransport(self),
                            **options)  # type: ignore[arg-type]

    def bodies(self) -> list[dict[str, object]]:
        return [json.loads(r.content) for r in self.seen if r.content]


def fails_then(error: type[httpx.TransportError], times: int, status: int = 201, body: object = JOB) -> Answer:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if n <= times:
            raise error("cut", request=request)
        return httpx.Response(status, json=body)

    return answer


def test_a_refused_connection_is_tried_again_and_the_retried_submit_keeps_its_key() -> None:
    script = Script(fails_then(httpx.ConnectError, 2))
    with script.client(idempotency_keys=True) as client:
        assert client.submit("noop", {"a": 1}, queue="mail") == JOB
    keys = {body["idempotency_key"] for body in script.bodies()}
    assert len(script.seen) == 3 and len(keys) == 1 and next(iter(keys)).startswith("auto-")
    assert script.seen[0].headers["authorization"] == "Bearer tok"
    assert script.bodies()[0] == {"task": "noop", "payload": {"a": 1}, "queue": "mail",
                                  "idempotency_key": next(iter(keys))}


def test_without_a_key_a_submit_cut_after_sending_is_not_sent_again() -> None:
    script = Script(fails_then(httpx.ReadError, 1))
    with script.client() as client, pytest.raises(Unreachable) as raised:
        client.submit("noop")
    assert len(script.seen) == 1 and raised.value.status == 0
    assert "idempotency_key" not in script.bodies()[0]


def test_with_a_key_a_cut_submit_is_sent_again() -> None:
    script = Script(fails_then(httpx.ReadError, 1))
    with script.client() as client:
        client.submit("noop", idempotency_key="order-7")
    assert [b["idempotency_key"] for b in script.bodies()] == ["order-7", "order-7"]


def test_every_job_of_a_batch_gets_its_own_key() -> None:
    script = Script(fails_then(httpx.ReadTimeout, 1, body={"ids": ["a", "b"]}))
    with script.client(idempotency_keys=True) as client:
        assert client.submit_batch([{"task": "noop"}, {"task": "noop", "idempotency_key": "mine"}]) == ["a", "b"]
    first, second = ([j["idempotency_key"] for j in b["jobs"]] for b in script.bodies())  # type: ignore[attr-defined]
    assert first == second and first[1] == "mine" and first[0] != first[1]


def test_a_cancel_cut_after_sending_is_not_sent_again_but_a_read_is() -> None:
    script = Script(fails_then(httpx.RemoteProtocolError, 2, status=200))
    with script.client() as client:
        with pytest.raises(Unreachable):
            client.cancel_job("j1")
        assert client.get_job("j1") == JOB
    assert [r.method for r in script.seen] == ["POST", "GET", "GET"]


def test_503_is_tried_again_until_the_retries_run_out() -> None:
    def busy(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "0"}, json={"status": 503, "detail": "storage down"})

    script = Script(busy)
    with script.client() as client, pytest.raises(GnomonError) as raised:
        client.retry_job("j1")
    assert raised.value.status == 503 and len(script.seen) == 1 + NO_WAIT.retries


def test_a_problem_answer_becomes_a_gnomon_error_naming_the_fields() -> None:
    problem = {"type": "urn:gnomon:problem:invalid-input", "title": "Unprocessable Content", "status": 422,
               "detail": "the request is not valid", "errors": [{"field": "priority", "message": "0 to 9"}]}
    script = Script(lambda request, n: httpx.Response(422, json=problem,
                                                      headers={"content-type": "application/problem+json"}))
    with script.client() as client, pytest.raises(GnomonError) as raised:
        client.submit("noop", priority=12)
    assert raised.value.status == 422 and raised.value.problem == problem
    assert "priority: 0 to 9" in str(raised.value) and len(script.seen) == 1


def test_an_answer_that_is_not_json_still_becomes_a_gnomon_error() -> None:
    script = Script(lambda request, n: httpx.Response(502, text="<html>bad gateway</html>"))
    with script.client() as client, pytest.raises(GnomonError) as raised:
        client.list_queues()
    assert raised.value.status == 502 and "bad gateway" in str(raised.value)


def test_instants_are_sent_as_rfc3339_and_naive_ones_are_refused() -> None:
    script = Script(lambda request, n: httpx.Response(201, json=JOB))
    with script.client() as client:
        client.submit("noop", run_at=datetime.fromisoformat("2030-01-01T00:00:00+01:00"))
        with pytest.raises(ValueError, match="time zone"):
            client.submit("noop", run_at=datetime(2030, 1, 1))
    assert script.bodies()[0]["run_at"] == "2030-01-01T00:00:00+01:00" and len(script.seen) == 1


async def test_the_async_client_follows_the_same_rules() -> None:
    script = Script(fails_then(httpx.ConnectError, 2))
    transport = httpx.MockTransport(script)
    async with AsyncGnomonClient("http://gnomon.test", "tok", retry=NO_WAIT, transport=transport,
                                 idempotency_keys=True) as client:
        assert await client.submit("noop") == JOB
        with pytest.raises(Unreachable):
            script.answer = fails_then(httpx.ReadError, 10)
            await client.cancel_job("j1")
    assert len({b.get("idempotency_key") for b in script.bodies()[:3]}) == 1 and len(script.seen) == 4
