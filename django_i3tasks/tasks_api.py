"""Django's tasks API in this process: ``django.tasks`` on Django 6, the ``django-tasks``
backport (0.10+) before it. Picked once, at import; the rest of the package takes the API's
names from here, whichever provides them.

Importing the API's checks module registers its system check, also when the backport is not
in ``INSTALLED_APPS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from django.tasks import checks as _api_checks
    from django.tasks import signals as api_signals
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import (
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django.tasks.base import Task as ApiTaskDefinition
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.utils.json import normalize_json
except ImportError:
    # Type-checked against Django 6's API (django-stubs); the backport has the same shape.
    if not TYPE_CHECKING:
        try:
            # Django < 6: the backport. Importing its checks module registers the tasks
            # framework's system check even when "django_tasks" is not in INSTALLED_APPS.
            from django_tasks import checks as _api_checks
            from django_tasks import signals as api_signals
            from django_tasks import task_backends
            from django_tasks.backends.base import BaseTaskBackend
            from django_tasks.base import (
                DEFAULT_TASK_QUEUE_NAME,
                TaskContext,
                TaskError,
                TaskResult,
                TaskResultStatus,
            )
            from django_tasks.base import Task as ApiTaskDefinition
            from django_tasks.exceptions import InvalidTaskError as InvalidTask
            from django_tasks.exceptions import TaskResultDoesNotExist
            from django_tasks.utils import normalize_json
        except ImportError as exc:
            raise ImportError(
                "django_i3tasks.backends.PubSubBackend needs Django's tasks API: Django 6+ "
                "(django.tasks), or the backport on Django 4.2-5.2: pip install "
                "'django-tasks>=0.10'"
            ) from exc

__all__ = [
    "DEFAULT_TASK_QUEUE_NAME", "TASKS_API", "ApiTaskDefinition", "BaseTaskBackend", "InvalidTask",
    "TaskContext", "TaskError", "TaskResult", "TaskResultDoesNotExist", "TaskResultStatus",
    "api_signals", "normalize_json", "task_backends",
]

#: Where the API comes from in this process: ``"django.tasks"`` or ``"django_tasks"``.
TASKS_API: str = TaskResult.__module__.rsplit(".", 1)[0]
_ = _api_checks  # imported for its side effect: the API's system check is registered
