"""Settings, read once at startup: flags > environment > gnomon.toml > defaults (SPEC §7).

This is the only module that reads os.environ. A bad value raises SettingsError naming where it came from
(`GNOMON_LEASE_SECONDS: ...`, `--port: ...`, `gnomon.toml: retention: ...`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from attrs import Factory, field, frozen

from entrypoints.setting_values import (
    Parser,
    at_least,
    parse_boolean,
    parse_host_patterns,
    parse_log_format,
    parse_retention,
    parse_tasks,
    parse_tokens,
    parse_word,
    url_with,
)


class SettingsError(Exception):
    """A configuration value is malformed; the message names the variable it came from."""


def _redact(url: str | None) -> str:
    """repr of a URL without its password."""
    if url is None or "://" not in url:
        return repr(url if url is None else "<conninfo>")
    parts = urlsplit(url)
    if parts.password is None:
        return repr(url)
    return repr(url.replace(f":{parts.password}@", ":***@", 1))


@frozen(kw_only=True)
class Settings:
    """Everything a gnomon process is configured with. Build it with `Settings.from_env(flags)`."""

    database_url: str | None = field(default=None, repr=_redact)  # None: in-memory backend
    redis_url: str | None = field(default=None, repr=_redact)  # None: in-memory dispatch
    redis_prefix: str = "gnomon"
    api_tokens: tuple[str, ...] = field(default=(), repr=lambda t: f"<{len(t)} tokens>")
    # task name -> "module:attr"
    tasks: Mapping[str, str] = field(factory=dict, converter=lambda m: MappingProxyType(dict(m)))
    lease_seconds: float = 30.0
    heartbeat_seconds: float = field(default=Factory(lambda s: s.lease_seconds / 3, takes_self=True))
    metrics_port: int | None = None  # None: no metrics server; 0: any free port
    dispatch_timeout_seconds: float = 30.0
    dispatch_pace_seconds: float = 0.002  # Redis dispatch order: a pushed batch's k-th id is scored now + k x pace
    shutdown_grace_seconds: float = 30.0
    retention: timedelta = timedelta(days=7)
    log_format: str = "text"
    http_allow: tuple[str, ...] = ()  # host patterns the `http` task may call
    http_allow_private: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 16 * 1024 * 1024

    @property
    def backend(self) -> str:
        return "postgres" if self.database_url else "memory"

    @classmethod
    def from_env(cls, flags: Mapping[str, object | None] | None = None) -> Settings:
        """Settings from the given flags, os.environ and the config file they (or the cwd) point to."""
        flags = flags or {}
        return load_settings(flags, os.environ, config_path(flags, os.environ, Path.cwd()))


VARIABLES: Final[dict[str, Parser]] = {
    "database_url": url_with("postgres", "postgresql", conninfo=True),
    "redis_url": url_with("redis", "rediss", "unix"),
    "redis_prefix": parse_word,
    "api_tokens": parse_tokens,
    "tasks": parse_tasks,
    "lease_seconds": at_least(0, inclusive=False),
    "heartbeat_seconds": at_least(0, inclusive=False),
    "metrics_port": at_least(0, inclusive=True, integer=True, high=65535),
    "dispatch_timeout_seconds": at_least(0, inclusive=False),
    "dispatch_pace_seconds": at_least(1e-6, inclusive=True, high=1.0),
    "shutdown_grace_seconds": at_least(0, inclusive=True),
    "retention": parse_retention,
    "log_format": parse_log_format,
    "http_allow": parse_host_patterns,
    "http_allow_private": parse_boolean,
    "host": parse_word,
    "port": at_least(0, inclusive=True, integer=True, high=65535),
    "max_body_bytes": at_least(1, inclusive=True, integer=True),
}


def config_path(flags: Mapping[str, object | None], environ: Mapping[str, str], cwd: Path) -> Path | None:
    """--config, else GNOMON_CONFIG, else ./gnomon.toml when it exists, else no file."""
    explicit = flags.get("config") or environ.get("GNOMON_CONFIG", "").strip()
    if explicit:
        return Path(str(explicit))
    default = cwd / "gnomon.toml"
    return default if default.is_file() else None


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"config file {path}: {error}") from None
    unknown = sorted(set(data) - set(VARIABLES))
    if unknown:
        raise SettingsError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return data


def _pick(name: str, flags: Mapping[str, object | None], environ: Mapping[str, str],
          file: Mapping[str, object], file_label: str) -> tuple[str, object] | None:
    """(where the value came from, raw value) from the first source that sets it."""
    if flags.get(name) is not None:
        return f"--{name.replace('_', '-')}", flags[name]
    env_name = f"GNOMON_{name.upper()}"
    if environ.get(env_name, "").strip():
        return env_name, environ[env_name]
    if name in file:
        return f"{file_label}: {name}", file[name]
    return None


def load_settings(flags: Mapping[str, object | None], environ: Mapping[str, str],
                  toml_path: Path | None) -> Settings:
    """Parse every variable from the first source that sets it. A flag whose value is None is unset;
    flag keys use the field names (dashes allowed), keys that are not settings (e.g. `config`) are ignored."""
    flags = {key.replace("-", "_"): value for key, value in flags.items()}
    file = _read_toml(toml_path) if toml_path is not None else {}
    values: dict[str, object] = {}
    for name, parse in VARIABLES.items():
        picked = _pick(name, flags, environ, file, str(toml_path))
        if picked is None:
            continue
        source, raw = picked
        try:
            values[name] = parse(raw)
        except ValueError as error:
            raise SettingsError(f"{source}: {error}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.heartbeat_seconds >= settings.lease_seconds:
        raise SettingsError(f"GNOMON_HEARTBEAT_SECONDS ({settings.heartbeat_seconds:g}) must be less than "
                            f"GNOMON_LEASE_SECONDS ({settings.lease_seconds:g})")
    return settings


def flag_environment(flags: Mapping[str, object | None]) -> dict[str, str]:
    """The environment that shows these flags to a child process: GNOMON_<NAME> for each setting flag given
    (a flag outranks the environment, so it overrides what the parent inherited), GNOMON_CONFIG for --config.
    Flags that are not settings (e.g. --queues) are left out: they are the child's own arguments."""
    env = {}
    for key, value in flags.items():
        name = key.replace("-", "_")
        if value is not None and (name in VARIABLES or name == "config"):
            env[f"GNOMON_{name.upper()}"] = str(value)
    return env


def child_environment(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `overrides`: what a process started by gnomon inherits."""
    return {**os.environ, **(overrides or {})}


def export_flags(flags: Mapping[str, object | None]) -> None:
    """Put the flags into this process's environment, for children that start without our arguments
    (uvicorn's worker processes, which build their settings from the environment alone)."""
    os.environ.update(flag_environment(flags))


def export_variable(name: str, value: str) -> None:
    """Put one variable into this process's environment for its children, replacing any inherited value
    (`gnomon api --workers N`: prometheus-client's PROMETHEUS_MULTIPROC_DIR, read by each worker process)."""
    os.environ[name] = value


DEFAULT_URL: Final = "http://127.0.0.1:8000"


@frozen(kw_only=True)
class ClientSettings:
    """Where the `gnomon jobs|schedules` commands send their requests: flags > environment > defaults."""

    url: str = DEFAULT_URL
    token: str | None = field(default=None, repr=lambda t: "None" if t is None else "<token>")

    @classmethod
    def from_env(cls, flags: Mapping[str, object | None] | None = None) -> ClientSettings:
        return load_client_settings(flags or {}, os.environ)


def load_client_settings(flags: Mapping[str, object | None], environ: Mapping[str, str]) -> ClientSettings:
    """--url / GNOMON_URL and --token / GNOMON_TOKEN; without a token, the first of GNOMON_API_TOKENS (a client
    on the server's own machine)."""
    values: dict[str, object] = {}
    for name, parse in (("url", url_with("http", "https")), ("token", parse_word)):
        picked = _pick(name, flags, environ, {}, "")
        if picked is not None:
            source, raw = picked
            try:
                values[name] = parse(raw)
            except ValueError as error:
                raise SettingsError(f"{source}: {error}") from None
    if "token" not in values and environ.get("GNOMON_API_TOKENS", "").strip():
        try:
            values["token"] = next(iter(parse_tokens(environ["GNOMON_API_TOKENS"])), None)
        except ValueError as error:
            raise SettingsError(f"GNOMON_API_TOKENS: {error}") from None
    return ClientSettings(**values)  # type: ignore[arg-type]
