"""Hand-written malformed requests for the API flood (test_faults.py), each a way real clients and attackers
get it wrong: broken JSON, wrong types, out-of-range numbers, NaN, NUL bytes and lone surrogates (which
PostgreSQL's jsonb and text refuse), naive or absurd timestamps, impossible cron rules, unknown zones, ids that
are no ids, hostile query strings and headers.

Every request carries a marker of its own (`queue` or `name` = `nasty-<n>-`) where its body can, so the audit
can tell that a rejected request stored nothing.
"""

from __future__ import annotations

from typing import Any

Request = tuple[str, str, dict[str, Any]]  # method, path, httpx keyword arguments
JSON = {"content-type": "application/json"}


def _raw(text: str | bytes) -> dict[str, Any]:
    return {"content": text if isinstance(text, bytes) else text.encode(), "headers": JSON}


def job_bodies(mark: str) -> list[Any]:
    job = {"task": "noop", "queue": mark}
    return [
        {**job, "nasty": 1}, {"task": "", "queue": mark}, {"task": "x" * 10_000, "queue": mark},
        {"task": "no-such-task", "queue": mark}, {**job, "priority": 10}, {**job, "priority": -1},
        {**job, "priority": 1e30}, {**job, "priority": "5"}, {**job, "priority": True}, {**job, "delay_seconds": -1},
        {**job, "delay_seconds": 1e308}, {**job, "run_at": "not a date"}, {**job, "run_at": "2024-01-01T00:00:00"},
        {**job, "run_at": "9999-12-31T23:59:59Z"}, {**job, "run_at": "0001-01-01T00:00:00Z"},
        {**job, "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1}, {**job, "max_attempts": 0},
        {**job, "max_attempts": -5}, {**job, "max_attempts": 2**63}, {**job, "backoff": {"base_seconds": -1}},
        {**job, "backoff": {"factor": 0.5}}, {**job, "backoff": {"nasty": 1}}, {**job, "timeout_seconds": 0},
        {**job, "timeout_seconds": -1}, {**job, "payload": []}, {**job, "payload": "x"},
        {**job, "payload": {"big": "x" * 300_000}}, {**job, "idempotency_key": ""},
        {**job, "idempotency_key": "k" * 10_000}, {**job, "concurrency_limit": 0}, {"task": "noop", "queue": ""},
        {"task": "noop", "queue": mark + "\u0000"}, {"task": "no\u0000op", "queue": mark},
        {**job, "payload": {"s": "a\u0000b"}}, {**job, "payload": {"a\u0000": 1}}, {**job, "queue": 5},
        {**job, "payload": {"n": 2**70}}, [job], "job", None, 12,
    ]


def raw_job_bodies(mark: str) -> list[bytes]:
    head = f'{{"task": "noop", "queue": "{mark}"'
    return [
        b"{", b"", b"null", head.encode() + b', "delay_seconds": NaN}', head.encode() + b', "delay_seconds": Infinity}',
        head.encode() + b', "timeout_seconds": NaN}', head.encode() + b', "payload": {"s": "\\ud800"}}',
        head.encode() + b', "payload": {"\\udfff": 1}}', head.encode() + b', "payload": {"s": "\xff\xfe"}}',
        head.encode() + b', "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        head.encode() + b', "payload": {"a": 1, "a": 2}, "task": "noop"}', head.encode() + b"}  trailing",
        b'{"task": "noop", "queue": "\\u0000"}',
    ]


def schedule_bodies(mark: str) -> list[Any]:
    job = {"task": "noop"}
    base = {"name": mark, "job": job}
    return [
        {**base, "cron": "bad"}, {**base, "cron": "0 0 30 2 *"}, {**base, "cron": "* * * * * * *"},
        {**base, "cron": "*/0 * * * *"}, {**base, "cron": "99 * * * *"}, {**base, "cron": "0 0 * * *",
                                                                            "interval_seconds": 60},
        base, {**base, "interval_seconds": 0}, {**base, "interval_seconds": -1}, {**base, "interval_seconds": 2**40},
        {**base, "interval_seconds": 60, "timezone": "Mars/Olympus"}, {**base, "interval_seconds": 60, "timezone": ""},
        {**base, "interval_seconds": 60, "timezone": "../../etc/passwd"},
        {**base, "interval_seconds": 60, "misfire_policy": "sometimes"}, {**base, "interval_seconds": 60,
                                                                          "jitter_seconds": -1},
        {**base, "interval_seconds": 60, "max_runs": 0},
        {**base, "interval_seconds": 60, "start_at": "2031-01-01T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"},
        {**base, "interval_seconds": 60, "start_at": "9999-12-31T23:59:59Z"},
        {**base, "interval_seconds": 60, "start_at": "2030-01-01T00:00:00"},
        {"name": "", "job": job, "interval_seconds": 60},
        {"name": mark + "x" * 10_000, "job": job, "interval_seconds": 60},
        {"name": mark + "\u0000", "job": job, "interval_seconds": 60}, {"name": mark, "interval_seconds": 60},
        {**base, "interval_seconds": 60, "job": {"task": "no-such-task"}},
        {**base, "interval_seconds": 60, "job": {"task": "noop", "payload": {"s": "\u0000"}}},
        {**base, "interval_seconds": 60, "job": {"task": "noop", "run_at": "2030-01-01T00:00:00Z"}},
        {**base, "interval_seconds": 60, "nasty": True}, {**base, "cron": "0 0 * * *", "timezone": "UTC\u0000"},
    ]


def patches(name: str) -> list[Any]:
    return [{"cron": "bad"}, {"interval_seconds": 0}, {"cron": None, "interval_seconds": None}, {"name": None},
            {"name": ""}, {"timezone": "X/Y"}, {"nasty": 1}, {"job": {"task": "no-such-task"}},
            {"job": {"payload": {"s": "\u0000"}}}, {"max_runs": 0}, {"cron": "0 0 * * *"},
            {"start_at": "2031-01-01T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, []]


def requests(target: str, start: int) -> list[tuple[str, Request]]:
    """(marker, request) pairs; `target` is an existing schedule (interval 1 s) the bad patches aim at."""
    out: list[tuple[str, Request]] = []

    def add(method: str, path: str, **kwargs: Any) -> str:
        mark = f"nasty-{start + len(out)}-"  # the dash: nasty-1- is no prefix of nasty-12-
        out.append((mark, (method, path, kwargs)))
        return mark

    for body in job_bodies("{mark}"):
        add("POST", "/v1/jobs", json=body)
    for raw in raw_job_bodies("{mark}"):
        add("POST", "/v1/jobs", **_raw(raw))
    for body in job_bodies("{mark}")[:12]:
        add("POST", "/v1/jobs/batch", json={"jobs": [{"task": "noop", "queue": "{mark}"}, body]})
    for body in ({"jobs": []}, {"jobs": [{}]}, {"jobs": "x"}, {"jobs": [{"task": "noop", "queue": "{mark}"}] * 10_001},
                 {"jobs": [{"task": "noop", "queue": "{mark}", "payload": {"s": "\u0000"}}]}, {"jobs": None}):
        add("POST", "/v1/jobs/batch", json=body)
    for body in schedule_bodies("{mark}"):
        add("POST", "/v1/schedules", json=body)
    for body in patches(target):
        add("PATCH", f"/v1/schedules/{target}", json=body)
    for body in ({"start": "2020-01-02T00:00:00Z", "end": "2020-01-01T00:00:00Z"},
                 {"start": "2020-01-01T00:00:00Z", "end": "2999-01-01T00:00:00Z"},
                 {"start": "1970-01-01T00:00:00Z", "end": "2020-01-01T00:00:00Z"}, {"start": "x", "end": "y"}, {}):
        add("POST", f"/v1/schedules/{target}/backfill", json=body)
    for body in ({"until": "x"}, {"until": "0001-01-01T00:00:00Z"}, {"note": 5}, {"nasty": 1}):
        add("POST", f"/v1/schedules/{target}/pause", json=body)
    for path in ("/v1/jobs/not-a-uuid", "/v1/jobs/00000000-0000-0000-0000-000000000000", "/v1/jobs/%00",
                 "/v1/jobs/" + "x" * 5000, "/v1/jobs/00000000-0000-0000-0000-000000000000/runs",
                 "/v1/schedules/%00", "/v1/schedules/" + "y" * 5000, f"/v1/schedules/{target}/preview?count=-1",
                 f"/v1/schedules/{target}/preview?count=100000", f"/v1/schedules/{target}/preview?count=abc",
                 f"/v1/schedules/{target}/occurrences?cursor=x", "/v1/jobs?limit=-1", "/v1/jobs?limit=abc",
                 "/v1/jobs?limit=99999999999999999999", "/v1/jobs?state=bogus", "/v1/jobs?cursor=%00",
                 "/v1/jobs?cursor=" + "A" * 5000, "/v1/jobs?schedule_id=not-a-uuid", "/v1/jobs?queue=%00"):
        add("GET", path)
    for path in ("/v1/jobs/not-a-uuid/cancel", "/v1/jobs/00000000-0000-0000-0000-000000000000/retry",
                 "/v1/schedules/no-such-schedule/trigger", "/v1/schedules/no-such-schedule/resume"):
        add("POST", path)
    add("POST", "/v1/jobs", content=b'{"task": "noop", "queue": "{mark}"}', headers={"content-type": "text/plain"})
    add("POST", "/v1/jobs", json={"task": "noop", "queue": "{mark}"}, headers={"authorization": "Basic eDp5"})
    add("POST", "/v1/jobs", json={"task": "noop", "queue": "{mark}"}, headers={"authorization": "Bearer"})
    return [(mark, _marked(request, mark)) for mark, request in out]


def _marked(request: Request, mark: str) -> Request:
    """Put the request's own marker where the body says {mark}."""
    method, path, kwargs = request
    marked = dict(kwargs)
    if "json" in marked:
        marked["json"] = _replace(marked["json"], mark)
    if "content" in marked:
        marked["content"] = marked["content"].replace(b"{mark}", mark.encode())
    return method, path, marked


def _replace(value: Any, mark: str) -> Any:
    if isinstance(value, str):
        return value.replace("{mark}", mark)
    if isinstance(value, list):
        return [_replace(v, mark) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, mark) for k, v in value.items()}
    return value
