"""The task registry and the built-in tasks; the http task's host policy without touching the network."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.tasks import (
    HttpTask,
    ImportedTaskRegistry,
    TaskImportError,
    WebhookError,
    builtin_tasks,
    make_http_task,
)
from adapters.tasks.builtin import fail, noop, sleep
from adapters.tasks.webhook import host_allowed, is_public
from application.ports import TaskContext, TaskRegistry
from domain.errors import PermanentFailure
from entrypoints.settings import load_settings


class FakeContext:
    """A TaskContext whose `cancelled` turns true after it was read `cancel_after` times."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.job_id, self.attempt = "job-1", 1
        self.deadline = datetime(2030, 1, 1, tzinfo=UTC)
        self.scheduled_for: datetime | None = None
        self.lateness_seconds = 0.0
        self.cancel_after = cancel_after
        self.reads = 0
        self.heartbeats = 0

    @property
    def cancelled(self) -> bool:
        self.reads += 1
        return self.cancel_after is not None and self.reads > self.cancel_after

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def fail_permanently(self, reason: str) -> None:
        raise PermanentFailure(reason)


CTX: TaskContext = FakeContext()


def registry(tasks: dict[str, str]) -> ImportedTaskRegistry:
    return ImportedTaskRegistry(tasks, builtin_tasks())


# --- registry -------------------------------------------------------------------------------------------


def test_builtins_are_registered() -> None:
    tasks: TaskRegistry = registry({})
    assert tasks.names() == {"noop", "sleep", "fail", "http"}
    assert tasks.handler("noop") is noop
    assert tasks.handler("nope") is None


def test_configured_tasks_come_from_gnomon_tasks() -> None:
    settings = load_settings({}, {"GNOMON_TASKS": "dump=json:dumps,join=os.path:join,"
                                                  "keys=collections:OrderedDict.fromkeys"}, None)
    tasks = ImportedTaskRegistry(settings.tasks, builtin_tasks())
    tasks.check()
    assert tasks.names() == {"noop", "sleep", "fail", "http", "dump", "join", "keys"}
    assert tasks.handler("dump") is json.dumps
    assert tasks.handler("keys") is not None and tasks.handler("join") is tasks.handler("join")


def test_a_configured_task_replaces_a_builtin_of_the_same_name() -> None:
    assert registry({"noop": "json:dumps"}).handler("noop") is json.dumps


def test_imports_are_lazy_and_happen_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gnomon_probe_tasks.py").write_text("IMPORTS = []\nIMPORTS.append(1)\n"
                                                    "def run(payload, ctx):\n    return len(IMPORTS)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gnomon_probe_tasks", raising=False)
    tasks = registry({"probe": "gnomon_probe_tasks:run"})
    assert "gnomon_probe_tasks" not in sys.modules
    handler = tasks.handler("probe")
    assert handler is not None and handler is tasks.handler("probe")
    assert handler({}, CTX) == 1


@pytest.mark.parametrize(("target", "message"), [
    ("no_such_module_for_gnomon:f", "cannot import"),
    ("json:no_such_attr", "cannot import"),
    ("json:__doc__", "not callable"),
    ("json", "expected module:attr"),
])
def test_a_bad_target_is_a_task_import_error(target: str, message: str) -> None:
    tasks = registry({"bad": target, "good": "json:dumps"})  # constructing does not import
    with pytest.raises(TaskImportError, match=f"task 'bad'.*{message}"):
        tasks.check()
    with pytest.raises(TaskImportError):
        tasks.handler("bad")
    assert tasks.handler("good") is json.dumps


def test_check_reports_every_bad_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gnomon_broken_tasks.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = registry({"a": "gnomon_broken_tasks:run", "b": "no_such_module_for_gnomon:f"})
    with pytest.raises(TaskImportError, match="boom at import") as caught:
        tasks.check()
    assert "task 'a'" in str(caught.value) and "task 'b'" in str(caught.value)


# --- noop, sleep, fail ----------------------------------------------------------------------------------


async def test_noop() -> None:
    assert await noop({}, CTX) is None


async def test_sleep_sleeps_the_given_seconds() -> None:
    assert await sleep({"seconds": 0}, FakeContext()) == {"slept": 0}
    assert await sleep({"seconds": 0.01}, FakeContext()) == {"slept": 0.01}


async def test_sleep_stops_when_the_job_is_cancelled() -> None:
    ctx = FakeContext(cancel_after=3)
    async with asyncio.timeout(60):  # a hang is a failure, not a stuck suite
        result = await sleep({"seconds": 3600}, ctx)
    assert result["cancelled"] is True and result["slept"] < 3600
    assert ctx.reads == 4


async def test_sleep_returns_at_once_when_already_cancelled() -> None:
    assert await sleep({"seconds": 3600}, FakeContext(cancel_after=0)) == {"slept": 0, "cancelled": True}


@pytest.mark.parametrize("seconds", [-1, "5", None, True, float("inf")])
async def test_sleep_refuses_a_bad_duration(seconds: object) -> None:
    with pytest.raises(PermanentFailure, match="seconds"):
        await sleep({"seconds": seconds}, FakeContext())


def test_fail_raises_a_retryable_error_or_a_permanent_failure() -> None:
    with pytest.raises(RuntimeError, match="as asked"):
        fail({}, CTX)
    with pytest.raises(RuntimeError, match=r"^kaput$") as caught:
        fail({"message": "kaput"}, CTX)
    assert not isinstance(caught.value, PermanentFailure)
    with pytest.raises(PermanentFailure, match=r"^for good$"):
        fail({"message": "for good", "permanent": True}, CTX)


# --- http: host policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "patterns", "allowed"), [
    ("example.com", (), False),
    ("example.com", ("*",), True),
    ("example.com", ("example.com",), True),
    ("EXAMPLE.com.", ("example.com",), True),
    ("api.example.com", ("example.com",), False),
    ("api.example.com", ("*.example.com",), True),
    ("a.b.example.com", ("*.example.com",), True),
    ("example.com", ("*.example.com",), False),
    ("badexample.com", ("*.example.com",), False),
    ("example.com.evil.io", ("example.com",), False),
    ("10.0.0.1", ("10.0.0.1",), True),
    ("::1", ("[::1]",), True),
    ("0:0::1", ("::1",), True),
])
def test_host_allow_list(host: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(("address", "public"), [
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("240.0.0.1", False), ("::1", False), ("fe80::1%eth0", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("8.8.8.8", True), ("2001:4860:4860::8888", True),
])
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public


class Recorder:
    """An httpx transport that records requests and answers from a script, never touching the network."""

    def __init__(self, status: int = 200, body: bytes = b"ok") -> None:
        self.requests: list[httpx.Request] = []
        self.status, self.body = status, body

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def fixed(*addresses: str) -> Any:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://10.1.2.3:8080/hook", "http://169.254.169.254/",
                                 "https://[::1]/", "http://[::ffff:10.0.0.1]/"])
async def test_private_address_literals_are_refused(url: str) -> None:
    recorder = Recorder()
    task = HttpTask(("*",), False, transport=recorder.transport())
    with pytest.raises(PermanentFailure, match="non-public address"):
        await task({"url": url}, CTX)
    assert recorder.requests == []


async def test_a_name_resolving_to_any_private_address_is_refused() -> None:
    recorder = Recorder()
    task = HttpTask(("*.example.com",), False, resolver=fixed("93.184.216.34", "10.0.0.7"),
                    transport=recorder.transport())
    with pytest.raises(PermanentFailure, match=r"10\.0\.0\.7"):
        await task({"url": "https://hooks.example.com/x"}, CTX)
    assert recorder.requests == []


@pytest.mark.parametrize(("allow", "url"), [((), "https://example.com/"),
                                            (("example.com",), "https://evil.io/"),
                                            (("*.example.com",), "https://example.com/")])
async def test_hosts_outside_the_allow_list_are_refused(allow: tuple[str, ...], url: str) -> None:
    recorder = Recorder()
    task = HttpTask(allow, True, resolver=fixed("93.184.216.34"), transport=recorder.transport())
    with pytest.raises(PermanentFailure, match="not allowed by GNOMON_HTTP_ALLOW"):
        await task({"url": url}, CTX)
    assert recorder.requests == []


async def test_a_public_host_is_called_on_its_checked_address() -> None:
    recorder = Recorder(201, b'{"ok": true}')
    task = HttpTask(("*",), False, resolver=fixed("93.184.216.34"), transport=recorder.transport())
    payload = {"url": "https://hooks.example.com:8443/in?k=1", "json": {"a": 1},
               "headers": {"X-Sig": "s", "host": "spoof"}}
    assert await task(payload, CTX) == {"status": 201, "body": '{"ok": true}'}
    [sent] = recorder.requests
    assert (sent.method, str(sent.url)) == ("POST", "https://93.184.216.34:8443/in?k=1")
    assert sent.headers.get_list("host") == ["hooks.example.com:8443"] and sent.headers["x-sig"] == "s"
    assert sent.extensions["sni_hostname"] == "hooks.example.com"
    assert json.loads(sent.content) == {"a": 1}


async def test_a_name_that_does_not_resolve_is_retryable() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    task = HttpTask(("*",), False, resolver=failing, transport=Recorder().transport())
    with pytest.raises(WebhookError, match="cannot resolve"):
        await task({"url": "https://hooks.example.com/"}, CTX)


@pytest.mark.parametrize("payload", [
    {}, {"url": 5}, {"url": "ftp://example.com/f"}, {"url": "file:///etc/passwd"}, {"url": "http:///nohost"},
    {"url": "https://example.com", "method": "TRACE"}, {"url": "https://example.com", "headers": {"a": 1}},
    {"url": "https://example.com", "expect_status": "200"}, {"url": "https://example.com", "expect_status": []},
    {"url": "https://example.com", "expect_status": [200, 999]},
    {"url": "https://example.com", "timeout_seconds": 0},
])
async def test_a_malformed_payload_fails_permanently(payload: dict[str, Any]) -> None:
    recorder = Recorder()
    with pytest.raises(PermanentFailure, match="http task"):
        await HttpTask(("*",), True, transport=recorder.transport())(payload, CTX)
    assert recorder.requests == []


@pytest.mark.parametrize(("status", "expect", "error"), [
    (200, None, None), (299, None, None), (204, 204, None), (201, [200, 201], None), (404, 404, None),
    (200, 201, WebhookError), (302, None, WebhookError), (500, None, WebhookError),
    (503, None, WebhookError), (408, None, WebhookError), (429, None, WebhookError),
    (400, None, PermanentFailure), (401, None, PermanentFailure), (404, None, PermanentFailure),
])
async def test_statuses(status: int, expect: object, error: type[Exception] | None) -> None:
    task = HttpTask(("api.test",), True, transport=Recorder(status, b"b").transport())
    payload = {"url": "https://api.test/", "method": "put", "expect_status": expect}
    if error is None:
        assert await task(payload, CTX) == {"status": status, "body": "b"}
    else:
        with pytest.raises(error, match=f"PUT https://api.test/ returned {status}"):
            await task(payload, CTX)


async def test_the_body_is_cut_at_64_kib() -> None:
    task = HttpTask(("*",), True, transport=Recorder(200, b"x" * 200_000).transport())
    result = await task({"url": "http://api.test/", "method": "GET"}, CTX)
    assert result["body"] == "x" * 64 * 1024


def test_builtin_http_task_carries_the_policy() -> None:
    http = builtin_tasks(("*.example.com",), True)["http"]
    assert isinstance(http, HttpTask) and http.allow == ("*.example.com",) and http.allow_private is True
    assert make_http_task((), False).allow == ()
