"""Task handlers: the registry of configured tasks and the built-in ones."""

from adapters.tasks.builtin import builtin_tasks
from adapters.tasks.registry import ImportedTaskRegistry, TaskImportError
from adapters.tasks.webhook import HttpTask, WebhookError, make_http_task

__all__ = ["HttpTask", "ImportedTaskRegistry", "TaskImportError", "WebhookError", "builtin_tasks",
           "make_http_task"]
