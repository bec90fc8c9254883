"""django-i3tasks: background tasks for Django over Google Cloud Pub/Sub push.

Public names are imported lazily so that ``settings.py`` can import
``django_i3tasks.types`` before Django is set up.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0.dev0"
__all__ = ["ChainHandle", "Task", "TaskDecorator", "TaskGroup", "TaskMetadata"]


def __getattr__(name: str) -> Any:
    if name in ("Task", "TaskDecorator", "TaskMetadata"):
        from . import task

        return getattr(task, name)
    if name == "ChainHandle":
        from .chains import ChainHandle

        return ChainHandle
    if name == "TaskGroup":
        from .models import TaskGroup

        return TaskGroup
    raise AttributeError(f"module 'django_i3tasks' has no attribute {name!r}")
