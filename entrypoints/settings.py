"""Settings, read once at startup: flags > environment > gnomon.toml > defaults (SPEC §7).

This is the only module that reads os.environ. A bad value raises SettingsError naming where it came from
(`GNOMON_LEASE_SECONDS: ...`, `--port: ...`, `gnomon.toml: retention: ...`).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from attrs import Factory, field, frozen


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


Parser = Callable[[object], object]  # takes a string (environment) or a native value (flags, TOML)


def _number(value: object, kind: type[int] | type[float] = float) -> float:
    what, allowed = ("a number", (str, int, float)) if kind is float else ("an integer", (str, int))
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ValueError(f"must be {what}, got {value!r}")
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _at_least(low: float, *, inclusive: bool, integer: bool = False, high: float | None = None) -> Parser:
    def parse(value: object) -> float | int:
        number = _number(value, int if integer else float)
        if number < low or (number == low and not inclusive) or (high is not None and number > high):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise ValueError(f"must be {bound}" + (f" and <= {high:g}" if high else "") + f", got {value!r}")
        return number

    return parse


def _word(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError(f"must be a non-empty string without spaces, got {value!r}")
    return value.strip()


def _url(*schemes: str, conninfo: bool = False) -> Parser:
    def parse(value: object) -> str:
        text = _word(value) if not conninfo else str(value).strip()
        if conninfo and "://" not in text and "=" in text:
            return text  # a libpq "key=value" connection string
        if urlsplit(text).scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}, got {text!r}")
        return text

    return parse


def _items(value: object) -> list[str]:
    """A comma-separated string or a list of strings, stripped, empties dropped."""
    if isinstance(value, str):
        raw: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        raw = list(value)
    else:
        raise ValueError(f"must be a comma-separated string or a list, got {value!r}")
    if not all(isinstance(item, str) for item in raw):
        raise ValueError(f"must contain only strings, got {value!r}")
    return [item.strip() for item in raw if isinstance(item, str) and item.strip()]


def _tokens(value: object) -> tuple[str, ...]:
    tokens = _items(value)
    if any(any(c.isspace() for c in token) for token in tokens):
        raise ValueError("a token must not contain spaces")
    return tuple(tokens)


TASK_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
TASK_TARGET: Final = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _tasks(value: object) -> Mapping[str, str]:
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = []
        for item in _items(value):
            name, sep, target = item.partition("=")
            if not sep:
                raise ValueError(f"expected name=module:attr, got {item!r}")
            pairs.append((name.strip(), target.strip()))
    tasks: dict[str, str] = {}
    for name, target in pairs:
        if not isinstance(name, str) or not TASK_NAME.match(name):
            raise ValueError(f"bad task name {name!r} (letters, digits, _ . - only)")
        if not isinstance(target, str) or not TASK_TARGET.match(target):
            raise ValueError(f"task {name!r}: expected module:attr, got {target!r}")
        if name in tasks:
            raise ValueError(f"task {name!r} is given twice")
        tasks[name] = target
    return tasks


DURATION: Final = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
UNIT_SECONDS: Final = (86400, 3600, 60, 1)


def parse_duration(text: str) -> timedelta:
    """'7d', '12h', '30m', '3600s', compounds in that order ('1d12h') or plain seconds ('3600')."""
    spec = text.strip().lower()
    if spec.isdigit():
        return timedelta(seconds=int(spec))
    found = DURATION.match(spec)
    if not spec or found is None:
        raise ValueError(f"must be a duration like 7d, 12h, 30m, 3600s or plain seconds, got {text!r}")
    counts = (int(n or 0) for n in found.groups())
    return timedelta(seconds=sum(n * unit for n, unit in zip(counts, UNIT_SECONDS, strict=True)))


def format_duration(duration: timedelta) -> str:
    """The inverse of parse_duration for whole seconds: 90061 s -> '1d1h1m1s'."""
    rest, parts = int(duration.total_seconds()), []
    for unit, suffix in zip(UNIT_SECONDS, "dhms", strict=True):
        count, rest = divmod(rest, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts) or "0s"


def _retention(value: object) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        duration = parse_duration(value)
    else:
        duration = timedelta(seconds=_number(value))
    if duration <= timedelta(0):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return duration


def _log_format(value: object) -> str:
    text = str(value).strip().lower()
    if text not in ("text", "json"):
        raise ValueError(f"must be 'text' or 'json', got {value!r}")
    return text


HOST_LABEL: Final = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def _host_pattern(pattern: str) -> str:
    text = pattern.lower().rstrip(".")
    if text == "*":
        return text
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    labels = text.removeprefix("*.").split(".")
    if not all(HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"bad host pattern {pattern!r} (use host.name, *.domain or *)")
    return text


def _host_patterns(value: object) -> tuple[str, ...]:
    return tuple(_host_pattern(item) for item in _items(value))


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off), got {value!r}")


VARIABLES: Final[dict[str, Parser]] = {
    "database_url": _url("postgres", "postgresql", conninfo=True),
    "redis_url": _url("redis", "rediss", "unix"),
    "redis_prefix": _word,
    "api_tokens": _tokens,
    "tasks": _tasks,
    "lease_seconds": _at_least(0, inclusive=False),
    "heartbeat_seconds": _at_least(0, inclusive=False),
    "metrics_port": _at_least(0, inclusive=True, integer=True, high=65535),
    "dispatch_timeout_seconds": _at_least(0, inclusive=False),
    "shutdown_grace_seconds": _at_least(0, inclusive=True),
    "retention": _retention,
    "log_format": _log_format,
    "http_allow": _host_patterns,
    "http_allow_private": _boolean,
    "host": _word,
    "port": _at_least(0, inclusive=True, integer=True, high=65535),
    "max_body_bytes": _at_least(1, inclusive=True, integer=True),
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
    for name, parse in (("url", _url("http", "https")), ("token", _word)):
        picked = _pick(name, flags, environ, {}, "")
        if picked is not None:
            source, raw = picked
            try:
                values[name] = parse(raw)
            except ValueError as error:
                raise SettingsError(f"{source}: {error}") from None
    if "token" not in values and environ.get("GNOMON_API_TOKENS", "").strip():
        try:
            values["token"] = next(iter(_tokens(environ["GNOMON_API_TOKENS"])), None)
        except ValueError as error:
            raise SettingsError(f"GNOMON_API_TOKENS: {error}") from None
    return ClientSettings(**values)  # type: ignore[arg-type]
