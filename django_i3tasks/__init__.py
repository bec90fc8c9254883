"""django-i3tasks: background tasks for Django over Google Cloud Pub/Sub push.

Public names are imported lazily so that ``settings.py`` can import
``django_i3tasks.types`` before Django is set up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = [
    "ChainHandle", "I3TasksError", "ResultTimeout", "Task", "TaskCancelled", "TaskDecorator",
    "TaskFailed", "TaskGroup", "TaskHandle", "TaskMetadata", "TaskResult",
    "TaskResultDoesNotExist", "TimeLimitExceeded", "get_result",
]

#: Where each public name lives (imported on first use).
_PUBLIC = {
    "Task": "task",
    "TaskDecorator": "task",
    "TaskMetadata": "metadata",
    "TaskHandle": "handles",
    "ChainHandle": "handles",
    "TaskGroup": "models",
    "I3TasksError": "exceptions",
    "TaskResult": "results",
    "get_result": "results",
    "TaskResultDoesNotExist": "exceptions",
    "TaskFailed": "exceptions",
    "TaskCancelled": "exceptions",
    "ResultTimeout": "exceptions",
    "TimeLimitExceeded": "exceptions",
}

if TYPE_CHECKING:
    from .exceptions import (
        I3TasksError,
        ResultTimeout,
        TaskCancelled,
        TaskFailed,
        TaskResultDoesNotExist,
        TimeLimitExceeded,
    )
    from .handles import ChainHandle, TaskHandle
    from .metadata import TaskMetadata
    from .models import TaskGroup
    from .results import TaskResult, get_result
    from .task import Task, TaskDecorator


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'django_i3tasks' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
