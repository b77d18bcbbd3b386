"""`gnomon stack` without processes: the topology it plans, how it labels output, what children inherit."""

from __future__ import annotations

import argparse
import io
import json

from entrypoints.cli import parser
from entrypoints.settings import Settings, flag_environment
from entrypoints.stack import Stack, plan


def _args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["stack", *argv])


def test_the_default_topology_is_one_api_two_schedulers_two_workers() -> None:
    children = plan(_args(), Settings())
    assert [c.name for c in children] == ["api", "scheduler.1", "scheduler.2", "worker.1", "worker.2"]
    assert children[0].args == ("api", "--workers", "1")
    assert children[3].args == ("worker", "--queues", "default", "--concurrency", "16")


def test_schedulers_and_workers_get_free_metrics_ports_unless_a_base_is_set() -> None:
    args = _args("--schedulers", "1", "--workers", "3", "--api-workers", "2", "--concurrency", "8")
    children = plan(args, Settings())
    assert [c.env["GNOMON_METRICS_PORT"] for c in children] == ["", "0", "0", "0", "0"]
    based = plan(args, Settings(metrics_port=9100))
    assert [c.env["GNOMON_METRICS_PORT"] for c in based] == ["", "9100", "9101", "9102", "9103"]
    assert based[0].args == ("api", "--workers", "2")


def test_flags_reach_the_children_as_environment() -> None:
    args = _args("--database-url", "postgresql://db/x", "--log-format", "json", "--port", "9000", "--workers", "5")
    env = flag_environment(vars(args))
    assert env == {"GNOMON_DATABASE_URL": "postgresql://db/x", "GNOMON_LOG_FORMAT": "json", "GNOMON_PORT": "9000"}


def test_text_lines_are_prefixed_and_json_lines_get_the_process_name() -> None:
    text = Stack({}, json_lines=False, kill_after=1, out=io.StringIO())
    assert text._prefixed("worker.2", "hello") == "worker.2    | hello"
    as_json = Stack({}, json_lines=True, kill_after=1, out=io.StringIO())
    line = as_json._prefixed("scheduler.1", json.dumps({"msg": "ready: scheduler", "level": "info"}))
    assert json.loads(line) == {"process": "scheduler.1", "msg": "ready: scheduler", "level": "info"}
    assert as_json._prefixed("api", "not json {") == "api         | not json {"
