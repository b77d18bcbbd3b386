"""Settings: precedence flags > environment > gnomon.toml > defaults, and a clear error for every bad value."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.redis.dispatcher import RedisDispatcher
from entrypoints.container import build
from entrypoints.setting_values import format_duration, parse_duration
from entrypoints.settings import Settings, SettingsError, config_path, load_settings

ROOT = Path(__file__).resolve().parents[2]


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gnomon.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings({}, {}, None)
    assert settings == Settings()
    assert settings.backend == "memory"
    assert (settings.database_url, settings.redis_url, settings.metrics_port) == (None, None, None)
    assert settings.redis_prefix == "gnomon"
    assert settings.lease_seconds == 30 and settings.heartbeat_seconds == 10
    assert settings.retention == timedelta(days=7)
    assert (settings.host, settings.port, settings.max_body_bytes) == ("127.0.0.1", 8000, 16 * 1024 * 1024)
    assert settings.api_tokens == () and dict(settings.tasks) == {} and settings.http_allow == ()
    assert settings.log_format == "text" and settings.http_allow_private is False


def test_a_database_url_selects_the_postgres_backend() -> None:
    settings = load_settings({}, {"GNOMON_DATABASE_URL": "postgresql://root@127.0.0.1/test"}, None)
    assert settings.backend == "postgres"


@pytest.mark.parametrize(("name", "env", "toml_value", "env_value", "flag_value", "parsed"), [
    ("lease_seconds", "GNOMON_LEASE_SECONDS", "40", "50", 60, [60, 50, 40, 30]),
    ("port", "GNOMON_PORT", "8001", "8002", "8003", [8003, 8002, 8001, 8000]),
    ("log_format", "GNOMON_LOG_FORMAT", '"json"', "text", "json", ["json", "text", "json", "text"]),
    ("redis_prefix", "GNOMON_REDIS_PREFIX", '"t"', "e", "f", ["f", "e", "t", "gnomon"]),
    ("retention", "GNOMON_RETENTION", '"1h"', "2h", timedelta(hours=3),
     [timedelta(hours=3), timedelta(hours=2), timedelta(hours=1), timedelta(days=7)]),
])
def test_precedence_is_flags_then_environment_then_file_then_defaults(
        tmp_path: Path, name: str, env: str, toml_value: str, env_value: str, flag_value: object,
        parsed: list[object]) -> None:
    path = toml(tmp_path, f"{name} = {toml_value}\n")
    flags, environ = {name: flag_value}, {env: env_value}
    assert getattr(load_settings(flags, environ, path), name) == parsed[0]
    assert getattr(load_settings({name: None}, environ, path), name) == parsed[1]
    assert getattr(load_settings({}, {env: "  "}, path), name) == parsed[2]  # blank = unset
    assert getattr(load_settings({}, {}, None), name) == parsed[3]


def test_tasks_come_from_the_environment_or_the_tasks_table(tmp_path: Path) -> None:
    path = toml(tmp_path, '[tasks]\nsend = "app.mail:send"\n')
    assert dict(load_settings({}, {}, path).tasks) == {"send": "app.mail:send"}
    env = {"GNOMON_TASKS": " a=m:f , b = pkg.mod:Cls.method ,"}
    assert dict(load_settings({}, env, path).tasks) == {"a": "m:f", "b": "pkg.mod:Cls.method"}


def test_lists_split_on_commas_or_come_as_toml_arrays(tmp_path: Path) -> None:
    env = {"GNOMON_API_TOKENS": "t1, t2,,", "GNOMON_HTTP_ALLOW": "Example.com, *.hooks.io, *, [::1]"}
    settings = load_settings({}, env, None)
    assert settings.api_tokens == ("t1", "t2")
    assert settings.http_allow == ("example.com", "*.hooks.io", "*", "::1")
    path = toml(tmp_path, 'api_tokens = ["x", "y"]\nhttp_allow = ["a.b"]\n')
    assert load_settings({}, {}, path).api_tokens == ("x", "y")
    assert load_settings({}, {}, path).http_allow == ("a.b",)


@pytest.mark.parametrize(("text", "value"), [("1", True), ("TRUE", True), ("yes", True), ("on", True),
                                             ("0", False), ("false", False), ("No", False), ("off", False)])
def test_booleans(text: str, value: bool) -> None:
    assert load_settings({}, {"GNOMON_HTTP_ALLOW_PRIVATE": text}, None).http_allow_private is value


def test_heartbeat_defaults_to_a_third_of_the_lease() -> None:
    assert load_settings({}, {"GNOMON_LEASE_SECONDS": "9"}, None).heartbeat_seconds == 3
    settings = load_settings({}, {"GNOMON_LEASE_SECONDS": "9", "GNOMON_HEARTBEAT_SECONDS": "2"}, None)
    assert settings.heartbeat_seconds == 2


def test_metrics_port_zero_means_any_free_port() -> None:
    assert load_settings({}, {"GNOMON_METRICS_PORT": "0"}, None).metrics_port == 0
    assert load_settings({"metrics_port": 9100}, {}, None).metrics_port == 9100


@pytest.mark.parametrize(("env", "value"), [
    ("GNOMON_DATABASE_URL", "mysql://localhost/db"),
    ("GNOMON_REDIS_URL", "http://localhost:6379"),
    ("GNOMON_REDIS_PREFIX", "two words"),
    ("GNOMON_API_TOKENS", "good, bad token"),
    ("GNOMON_TASKS", "lonely"),
    ("GNOMON_TASKS", "a=no_colon"),
    ("GNOMON_TASKS", "a=m:f,a=m:g"),
    ("GNOMON_TASKS", "bad name=m:f"),
    ("GNOMON_TASKS", "a=1mod:f"),
    ("GNOMON_LEASE_SECONDS", "abc"),
    ("GNOMON_LEASE_SECONDS", "0"),
    ("GNOMON_LEASE_SECONDS", "nan"),
    ("GNOMON_LEASE_SECONDS", "inf"),
    ("GNOMON_HEARTBEAT_SECONDS", "-1"),
    ("GNOMON_HEARTBEAT_SECONDS", "30"),  # not less than the lease
    ("GNOMON_METRICS_PORT", "70000"),
    ("GNOMON_METRICS_PORT", "-1"),
    ("GNOMON_METRICS_PORT", "1.5"),
    ("GNOMON_DISPATCH_TIMEOUT_SECONDS", "0"),
    ("GNOMON_DISPATCH_PACE_SECONDS", "0"),
    ("GNOMON_DISPATCH_PACE_SECONDS", "2"),  # above a second: a typo for milliseconds
    ("GNOMON_SHUTDOWN_GRACE_SECONDS", "-0.5"),
    ("GNOMON_RETENTION", "7x"),
    ("GNOMON_RETENTION", "d"),
    ("GNOMON_RETENTION", "3d7d"),
    ("GNOMON_RETENTION", "0s"),
    ("GNOMON_RETENTION", "-5"),
    ("GNOMON_LOG_FORMAT", "xml"),
    ("GNOMON_HTTP_ALLOW", "a.*.com"),
    ("GNOMON_HTTP_ALLOW", "exa mple.com"),
    ("GNOMON_HTTP_ALLOW_PRIVATE", "maybe"),
    ("GNOMON_HOST", "local host"),
    ("GNOMON_PORT", "http"),
    ("GNOMON_MAX_BODY_BYTES", "0"),
])
def test_a_bad_environment_value_names_its_variable(env: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env}:? .+"):
        load_settings({}, {env: value}, None)


@pytest.mark.parametrize(("flag", "value", "label"), [
    ("lease_seconds", True, "--lease-seconds"),
    ("port", 3.5, "--port"),
    ("http-allow", 7, "--http-allow"),
    ("api_tokens", ["ok", 3], "--api-tokens"),
    ("retention", timedelta(0), "--retention"),
])
def test_a_bad_flag_names_the_flag(flag: str, value: object, label: str) -> None:
    with pytest.raises(SettingsError, match=f"^{label}: "):
        load_settings({flag: value}, {}, None)


def test_flags_that_are_not_settings_are_ignored() -> None:
    assert load_settings({"config": "x.toml", "queues": "a,b"}, {}, None) == Settings()


@pytest.mark.parametrize(("text", "message"), [
    ("lease_seconds = 'soon'\n", "lease_seconds: must be a number"),
    ("tasks = 5\n", "tasks: must be a comma-separated string"),
    ("[tasks]\nx = 3\n", "expected module:attr"),
    ("lease_secs = 1\n", "unknown keys lease_secs"),
    ("lease_seconds = \n", "Invalid value"),
])
def test_a_bad_config_file_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = toml(tmp_path, text)
    with pytest.raises(SettingsError, match=str(path)) as caught:
        load_settings({}, {}, path)
    assert message in str(caught.value)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({}, {}, tmp_path / "nope.toml")


def test_config_path_is_flag_then_environment_then_an_existing_default(tmp_path: Path) -> None:
    env = {"GNOMON_CONFIG": "/etc/gnomon/env.toml"}
    assert config_path({"config": "/flag.toml"}, env, tmp_path) == Path("/flag.toml")
    assert config_path({"config": None}, env, tmp_path) == Path("/etc/gnomon/env.toml")
    assert config_path({}, {}, tmp_path) is None
    default = toml(tmp_path, "")
    assert config_path({}, {}, tmp_path) == default


def test_from_env_reads_the_process_environment_and_the_default_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml(tmp_path, 'redis_prefix = "from-file"\nport = 9001\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GNOMON_PORT", "9002")
    monkeypatch.delenv("GNOMON_CONFIG", raising=False)
    settings = Settings.from_env({"host": "0.0.0.0"})
    assert (settings.host, settings.port, settings.redis_prefix) == ("0.0.0.0", 9002, "from-file")


def test_repr_hides_secrets() -> None:
    settings = Settings(database_url="postgresql://u:hunter2@db/gnomon", redis_url="redis://:pw9@r:6379/0",
                        api_tokens=("sekrit",))
    assert not {"hunter2", "pw9", "sekrit"} & set(repr(settings).replace("'", " ").replace(":", " ").split())
    assert "hunter2" not in repr(settings) and "sekrit" not in repr(settings)


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86400), ("12h", 12 * 3600), ("30m", 1800), ("3600s", 3600), ("3600", 3600),
    ("1d12h", 36 * 3600), (" 2H ", 7200), ("1d1h1m1s", 90061),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@given(st.integers(min_value=0, max_value=10**9))
def test_durations_round_trip(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration
    assert parse_duration(str(seconds)) == duration


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from([("d", 86400), ("h", 3600), ("m", 60),
                                                                   ("s", 1)]))
def test_retention_in_any_unit(count: int, unit: tuple[str, int]) -> None:
    settings = load_settings({}, {"GNOMON_RETENTION": f"{count}{unit[0]}"}, None)
    assert settings.retention == timedelta(seconds=count * unit[1])


NAMES = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)
IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
TARGETS = st.builds(lambda m, a: f"{'.'.join(m)}:{'.'.join(a)}",
                    st.lists(IDENT, min_size=1, max_size=3), st.lists(IDENT, min_size=1, max_size=2))


@given(st.dictionaries(NAMES, TARGETS, max_size=5))
def test_gnomon_tasks_round_trip(tasks: dict[str, str]) -> None:
    text = ",".join(f"{name}={target}" for name, target in tasks.items())
    assert dict(load_settings({}, {"GNOMON_TASKS": text}, None).tasks) == tasks


def test_only_the_settings_module_reads_the_environment() -> None:
    offenders = []
    for package in ("domain", "application", "adapters", "entrypoints"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "entrypoints" / "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_dispatch_pace_reaches_the_redis_dispatcher() -> None:
    settings = load_settings({}, {"GNOMON_DISPATCH_PACE_SECONDS": "0.005", "GNOMON_DATABASE_URL": "postgresql://x/y",
                                  "GNOMON_REDIS_URL": "redis://127.0.0.1:1/0"}, None)
    dispatcher = build(settings).adapters.dispatcher()
    assert isinstance(dispatcher, RedisDispatcher) and dispatcher._pace_seconds == 0.005
    assert load_settings({}, {}, None).dispatch_pace_seconds == 0.002
