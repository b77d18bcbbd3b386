"""Layer purity by reading the source with `ast` (imports anywhere in a file count, TYPE_CHECKING blocks and
function bodies included): domain/ imports only the standard library (minus I/O, clock and randomness modules),
attrs, croniter and itself, and never reads the clock (datetime.now/utcnow/today, time.time, ...);
application/ imports no driver or framework (psycopg, redis, litestar, dependency_injector, httpx, uvicorn)
and nothing of adapters/ or entrypoints/. The checkers are themselves tested on small bad sources."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ALLOWED = (sys.stdlib_module_names - {
    "asyncio", "os", "random", "secrets", "socket", "ssl", "subprocess", "threading", "multiprocessing", "time",
    "urllib", "http", "sqlite3", "select", "selectors", "shutil",
}) | {"attrs", "croniter", "domain"}
APPLICATION_FORBIDDEN = frozenset({"psycopg", "psycopg_pool", "redis", "litestar", "dependency_injector", "httpx",
                                   "uvicorn", "adapters", "entrypoints"})
CLOCK_READS = {"datetime": {"now", "utcnow", "today"}, "date": {"today"},
               "time": {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns"},
               "uuid": {"uuid1", "uuid4"}}
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def sources(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no sources under {package}/"
    return found


def imported(tree: ast.AST, package: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for every import; relative imports are resolved against `package`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: max(len(package.split(".")) - node.level + 1, 0)] if node.level else []
            yield node.lineno, ".".join([*base, *([node.module] if node.module else [])]) or package


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def clock_reads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Uses (calls or references) of a clock, a random id source or a dynamic import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = dotted(node.value).rsplit(".", 1)[-1]
            if node.attr in CLOCK_READS.get(owner, ()) or node.attr in DYNAMIC_IMPORTS:
                yield node.lineno, f"{dotted(node.value)}.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module in CLOCK_READS:
            for alias in node.names:
                if alias.name in CLOCK_READS[node.module]:
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Name) and node.id in DYNAMIC_IMPORTS:
            yield node.lineno, node.id


def domain_problems(source: str, module: str = "domain.x") -> list[str]:
    tree = ast.parse(source)
    package = module.rsplit(".", 1)[0]
    bad = [f"{line}: imports {name}" for line, name in imported(tree, package)
           if name.split(".")[0] not in DOMAIN_ALLOWED]
    return bad + [f"{line}: reads the clock or imports dynamically: {what}" for line, what in clock_reads(tree)]


def application_problems(source: str, module: str = "application.x") -> list[str]:
    tree = ast.parse(source)
    package = module.rsplit(".", 1)[0]
    bad = [f"{line}: imports {name}" for line, name in imported(tree, package)
           if name.split(".")[0] in APPLICATION_FORBIDDEN]
    dynamic = [f"{line}: imports dynamically" for line, what in clock_reads(tree)
               if what.rsplit(".", 1)[-1] in DYNAMIC_IMPORTS]
    return bad + dynamic


def module_name(path: Path) -> str:
    """Dotted path of the file ("domain.job", "domain.__init__"): what precedes the last dot is its package."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", sources("domain"), ids=lambda p: p.name)
def test_domain_imports_only_the_standard_library_attrs_and_croniter(path: Path) -> None:
    assert domain_problems(path.read_text(), module_name(path)) == [], path


@pytest.mark.parametrize("path", sources("application"), ids=lambda p: p.name)
def test_application_imports_no_driver_framework_adapter_or_entrypoint(path: Path) -> None:
    assert application_problems(path.read_text(), module_name(path)) == [], path


@pytest.mark.parametrize("source", [
    "import psycopg", "from redis.asyncio import Redis", "import asyncio", "from os import environ",
    "import adapters.memory", "from application import ports", "from ..adapters import memory",
    "def f():\n    import httpx", "from datetime import datetime\nx = datetime.now()",
    "import datetime as dt\nx = dt.datetime.utcnow()", "from datetime import date\nd = date.today()",
    "import time\nt = time.time()", "from time import monotonic", "from uuid import uuid4",
    "from attrs import field\nnow = field(factory=datetime.now)", "import importlib\nimportlib.import_module('x')",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import litestar",
])
def test_the_domain_checker_catches(source: str) -> None:
    assert domain_problems(source), source


@pytest.mark.parametrize("source", [
    "from datetime import UTC, datetime, timedelta\nx = datetime(2030, 1, 1, tzinfo=UTC)",
    "from . import errors\nfrom domain.retry import Backoff", "import attrs\nfrom croniter import croniter",
    "from zoneinfo import ZoneInfo", "import hashlib, re, json, uuid\nu = uuid.UUID(int=1)",
])
def test_the_domain_checker_lets_pure_code_through(source: str) -> None:
    assert domain_problems(source) == [], source


@pytest.mark.parametrize("source", [
    "import psycopg", "from psycopg_pool import AsyncConnectionPool", "import redis.asyncio",
    "from litestar import get", "from dependency_injector import containers", "import httpx", "import uvicorn",
    "from adapters.memory import InMemoryJobRepository", "from entrypoints import container",
    "from ..adapters import postgres", "def f():\n    from entrypoints.settings import Settings",
    "__import__('redis')",
])
def test_the_application_checker_catches(source: str) -> None:
    assert application_problems(source), source


def test_the_application_checker_lets_ports_and_domain_through() -> None:
    source = "import asyncio\nfrom domain.job import Job\nfrom application.ports import Clock\nfrom .ports import Page"
    assert application_problems(source) == []
