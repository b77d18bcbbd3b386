"""The task registry: configured tasks ("module:attr", imported lazily, once) plus the built-in ones."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from application.ports import Handler


class TaskImportError(Exception):
    """A configured task cannot be imported or is not callable: the process must not start."""


def import_target(name: str, target: str) -> Handler:
    """Import "package.module:attr.path" and return the callable it names."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise TaskImportError(f"task {name!r}: expected module:attr, got {target!r}")
    try:
        found: object = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            found = getattr(found, attr)
    except Exception as error:  # an import runs arbitrary code: any failure means a bad configuration
        raise TaskImportError(f"task {name!r}: cannot import {target!r}: {error!r}") from error
    if not callable(found):
        raise TaskImportError(f"task {name!r}: {target!r} is not callable")
    return found  # type: ignore[return-value]


class ImportedTaskRegistry:
    """Names map to handlers. A configured task of the same name as a built-in one replaces it."""

    def __init__(self, mapping: Mapping[str, str], builtins: Mapping[str, Handler]) -> None:
        self._targets = dict(mapping)
        self._builtins = {k: v for k, v in builtins.items() if k not in self._targets}
        self._imported: dict[str, Handler] = {}

    def names(self) -> frozenset[str]:
        return frozenset(self._targets) | frozenset(self._builtins)

    def handler(self, name: str) -> Handler | None:
        """The callable for `name`, None if unknown; TaskImportError if its import fails."""
        if name in self._builtins:
            return self._builtins[name]
        if name not in self._targets:
            return None
        if name not in self._imported:
            self._imported[name] = import_target(name, self._targets[name])
        return self._imported[name]

    def check(self) -> None:
        """Import every configured task now; one TaskImportError listing all the failures."""
        problems = []
        for name in sorted(self._targets):
            try:
                self.handler(name)
            except TaskImportError as error:
                problems.append(str(error))
        if problems:
            raise TaskImportError("; ".join(problems))
