"""Parsers of setting values. Each takes a string (environment) or a native value (flags, TOML) and returns the
value, or raises ValueError saying what it expected; entrypoints/settings.py adds where the value came from."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Final
from urllib.parse import urlsplit

Parser = Callable[[object], object]  # takes a string (environment) or a native value (flags, TOML)


def parse_number(value: object, kind: type[int] | type[float] = float) -> float:
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


def at_least(low: float, *, inclusive: bool, integer: bool = False, high: float | None = None) -> Parser:
    def parse(value: object) -> float | int:
        number = parse_number(value, int if integer else float)
        if number < low or (number == low and not inclusive) or (high is not None and number > high):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise ValueError(f"must be {bound}" + (f" and <= {high:g}" if high else "") + f", got {value!r}")
        return number

    return parse


def parse_word(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError(f"must be a non-empty string without spaces, got {value!r}")
    return value.strip()


def url_with(*schemes: str, conninfo: bool = False) -> Parser:
    def parse(value: object) -> str:
        text = parse_word(value) if not conninfo else str(value).strip()
        if conninfo and "://" not in text and "=" in text:
            return text  # a libpq "key=value" connection string
        if urlsplit(text).scheme not in schemes:
            raise ValueError(f"must be a URL with scheme {' or '.join(schemes)}, got {text!r}")
        return text

    return parse


def parse_items(value: object) -> list[str]:
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


def parse_tokens(value: object) -> tuple[str, ...]:
    tokens = parse_items(value)
    if any(any(c.isspace() for c in token) for token in tokens):
        raise ValueError("a token must not contain spaces")
    return tuple(tokens)


TASK_NAME: Final = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
TASK_TARGET: Final = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def parse_tasks(value: object) -> Mapping[str, str]:
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        pairs = []
        for item in parse_items(value):
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


def parse_retention(value: object) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        duration = parse_duration(value)
    else:
        duration = timedelta(seconds=parse_number(value))
    if duration <= timedelta(0):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return duration


def parse_log_format(value: object) -> str:
    text = str(value).strip().lower()
    if text not in ("text", "json"):
        raise ValueError(f"must be 'text' or 'json', got {value!r}")
    return text


HOST_LABEL: Final = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def parse_host_pattern(pattern: str) -> str:
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


def parse_host_patterns(value: object) -> tuple[str, ...]:
    return tuple(parse_host_pattern(item) for item in parse_items(value))


def parse_boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off), got {value!r}")
