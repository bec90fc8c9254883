"""The registry of tasks by dotted name.

A message can only run a function that a ``@TaskDecorator`` put here at import time: the
execution path looks names up in this dict and never imports a module named in a message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.utils.module_loading import autodiscover_modules

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger(__name__)


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, task: Task) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.func is not task.func:
            # Re-importing a module (autoreload, importlib.reload) defines the function again.
            logger.debug("Task %s registered again; the newer definition wins", task.name)
        self._tasks[task.name] = task

    def get(self, name: str) -> Task | None:
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def all(self) -> list[Task]:
        return [self._tasks[name] for name in self.names()]


registry = TaskRegistry()


def autodiscover() -> None:
    """Import the ``tasks`` module of every installed app, as the admin does for ``admin``."""
    autodiscover_modules("tasks")
