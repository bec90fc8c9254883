"""The registry of tasks by dotted name.

A message can only run a function that a ``@TaskDecorator`` (or Django's ``@task`` with our
backend) put here at import time: the execution path looks names up in this dict and never
imports a module named in a message.

The registry also knows which tasks a server registers by itself: those defined while Django
starts (``django.setup()``: an installed app's ``tasks`` module, ``I3TASKS.task_modules``, any
module an app's ``ready()`` imports). A task registered later, from a module that only some
code path imports, is unknown to a push or worker process that never takes that path, so
``.delay()`` refuses it unless the message runs in this process (the inline and recording
outboxes).

Entries are typed by ``Registered``, the little the registry needs of a task, so this module
imports nothing above it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from django.apps import apps
from django.utils.module_loading import autodiscover_modules

logger = logging.getLogger(__name__)


class Registered(Protocol):
    """What the registry keeps of a task."""

    @property
    def name(self) -> str: ...

    @property
    def func(self) -> Callable[..., Any]: ...


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, Any] = {}
        #: Names first registered after Django had started.
        self._late: set[str] = set()

    def register(self, task: Registered) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.func is not task.func:
            # Re-importing a module (autoreload, importlib.reload) defines the function again.
            logger.debug("Task %s registered again; the newer definition wins", task.name)
        elif existing is None and apps.ready:
            self._late.add(task.name)
        self._tasks[task.name] = task

    def get(self, name: str) -> Any:
        """The task registered under ``name``, or ``None``."""
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def all(self) -> list[Any]:
        return [self._tasks[name] for name in self.names()]

    def known_at_startup(self, name: str) -> bool:
        """Whether ``name`` was registered while Django started (so every server process
        registers it by itself)."""
        return name in self._tasks and name not in self._late


registry = TaskRegistry()


def autodiscover() -> None:
    """Import the ``tasks`` module of every installed app, as the admin does for ``admin``."""
    autodiscover_modules("tasks")
