"""``PubSubBackend``: django-i3tasks as a backend of Django's tasks API.

``TASKS = {"default": {"BACKEND": "django_i3tasks.backends.PubSubBackend"}}`` makes functions
decorated with Django's ``@task`` run on this package's engine: ``.enqueue()`` writes the same
rows as ``.delay()`` and publishes through the same outbox (after commit), the push view and the
pull worker run the message with the same runner (claim, run, record: a duplicate delivery
runs nothing), and ``get_result()`` reads the rows back.

The API is ``django.tasks`` on Django 6 and the ``django-tasks`` backport (0.10+) before it;
the base class and the API's classes are picked once, at import. Django's API has no
workflows (chains, ``pipe``, groups, failure handlers): those are on ``@TaskDecorator`` tasks.

A thin adapter: tasks are registered in our registry when Django's ``@task`` defines them
(``validate_task`` runs at definition), as ``ApiTask`` entries, so a message still only runs a
registered function and never imports a module it names.

Status mapping (our execution -> the API's ``TaskResultStatus``):

- waiting, scheduled, pending (its latest try queued or in its backoff) -> READY
- pending with its latest try running -> RUNNING
- success -> SUCCESSFUL
- failed, skipped, and any other finished state (cancelled, expired) -> FAILED
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import lifecycle
from .conf import get_settings
from .models import ExecutionStatus, TaskExecution, TaskExecutionResult, TaskExecutionTry, TryStatus
from .registry import registry
from .task import Task, TaskMetadata

if TYPE_CHECKING:
    # Type-checked against Django 6's API (django-stubs); the backport has the same shape.
    from django.tasks import checks as _api_checks
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
else:
    try:
        from django.tasks import checks as _api_checks
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
    except ImportError:
        try:
            # Django < 6: the backport. Importing its checks module registers the tasks
            # framework's system check even when "django_tasks" is not in INSTALLED_APPS.
            from django_tasks import checks as _api_checks
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
        except ImportError as exc:
            raise ImportError(
                "django_i3tasks.backends.PubSubBackend needs Django's tasks API: Django 6+ "
                "(django.tasks), or the backport on Django 4.2-5.2: pip install "
                "'django-tasks>=0.10'"
            ) from exc

__all__ = [
    "TASKS_API", "ApiTask", "BaseTaskBackend", "InvalidTask", "PubSubBackend", "TaskContext",
    "TaskResult", "TaskResultDoesNotExist", "TaskResultStatus", "build_result",
]

#: Where the API comes from in this process: ``"django.tasks"`` or ``"django_tasks"``.
TASKS_API: str = TaskResult.__module__.rsplit(".", 1)[0]
_ = _api_checks  # imported for its side effect: the API's system check is registered

#: Priority every task has unless it sets one (both APIs use 0).
DEFAULT_PRIORITY = 0
#: ``OPTIONS`` keys the backend understands.
OPTION_NAMES = frozenset({"MAX_RETRIES"})

#: Our states that map to SUCCESSFUL, READY or (with a running try) RUNNING; every other
#: state is a finished failure, so one added later (cancelled, expired) maps to FAILED.
_SUCCESS = str(ExecutionStatus.SUCCESS)
_NOT_STARTED = {str(ExecutionStatus.WAITING), str(ExecutionStatus.SCHEDULED)}
_PENDING = str(ExecutionStatus.PENDING)


@dataclass(frozen=True, eq=False, repr=False)
class ApiTask(Task[..., Any]):
    """Our registry's entry for a function decorated with Django's ``@task``.

    It runs like any registered task (``execution.run_message``); only the call differs: a
    ``takes_context=True`` function gets the API's ``TaskContext`` first, whose ``attempt`` is
    our try number.
    """

    definition: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.definition is not None and self.definition.takes_context and self._signature:
            # The runner passes the context first: calls bind the parameters after it.
            parameters = list(self._signature.parameters.values())[1:]
            object.__setattr__(self, "_signature",
                               self._signature.replace(parameters=parameters))

    def __repr__(self) -> str:
        return f"<ApiTask {self.name}>"

    def run(self, args: Sequence[Any], kwargs: dict[str, Any], metadata: TaskMetadata, *,
            time_limit: float | None = None) -> Any:
        if self.definition.takes_context:
            args = [TaskContext(task_result=self._current_result(metadata)), *args]
        return super().run(args, kwargs, metadata, time_limit=time_limit)

    def _current_result(self, metadata: TaskMetadata) -> TaskResult[..., Any]:
        """The result of the execution being run (RUNNING, ``attempts`` = try number); for a
        plain inline call (``entry(...)``), a result that exists only in memory."""
        if metadata.execution_uuid is not None:
            execution = TaskExecution.objects.filter(uuid=metadata.execution_uuid).first()
            if execution is not None:
                return build_result(self.definition, execution)
        now = timezone.now()
        return TaskResult(
            task=self.definition, id="", status=TaskResultStatus("RUNNING"), enqueued_at=None,
            started_at=now, finished_at=None, last_attempted_at=now, args=[], kwargs={},
            backend=self.definition.backend, errors=[], worker_ids=["inline"],
        )


def task_name(definition: ApiTaskDefinition[..., Any]) -> str:
    """The dotted path a task is registered and enqueued under (the API's ``module_path``)."""
    return f"{definition.func.__module__}.{definition.func.__qualname__}"


def build_result(definition: ApiTaskDefinition[..., Any],
                 execution: TaskExecution) -> TaskResult[..., Any]:
    """The API's ``TaskResult`` of one execution, read from its rows (see the module's status
    mapping). ``attempts`` counts the tries that started; ``errors`` has one entry per failed
    try, oldest first."""
    tries = list(
        TaskExecutionTry.objects.filter(execution_id=execution.pk)
        .order_by("number")
        .only("number", "status", "started_at", "error_type", "traceback")
    )
    started = [t for t in tries if t.started_at is not None]
    state = str(execution.status)
    if state == _SUCCESS:
        name = "SUCCESSFUL"
    elif state in _NOT_STARTED:
        name = "READY"
    elif state == _PENDING:
        running = bool(tries) and tries[-1].status == TryStatus.RUNNING
        name = "RUNNING" if running else "READY"
    else:
        name = "FAILED"
    status = TaskResultStatus(name)
    result = TaskResult(
        task=definition,
        id=str(execution.uuid),
        status=status,
        enqueued_at=execution.created_at,
        started_at=started[0].started_at if started else None,
        finished_at=execution.finished_at,
        last_attempted_at=started[-1].started_at if started else None,
        args=list(execution.args),
        kwargs=dict(execution.kwargs),
        backend=definition.backend,
        errors=[
            TaskError(exception_class_path=t.error_type, traceback=t.traceback)
            for t in tries if t.status == TryStatus.FAILED
        ],
        # Our rows record tries, not which process ran them: one id per started try, so
        # that ``attempts`` (their count) is the number of tries run so far.
        worker_ids=[f"try-{t.number}" for t in started],
    )
    if status == TaskResultStatus.SUCCESSFUL:
        value = (
            TaskExecutionResult.objects.filter(execution_id=execution.pk)
            .values_list("value", flat=True)
            .first()
        )
        object.__setattr__(result, "_return_value", value)
    return result


class PubSubBackend(BaseTaskBackend):
    """Django's tasks API on django-i3tasks (Pub/Sub push, rows per execution and try).

    ``QUEUES`` are names of ``I3TASKS`` queues (``PushQueue``/``PullQueue``); the API's
    ``"default"`` means ``I3TASKS.default_queue`` unless a queue is named ``"default"``.
    Without ``QUEUES`` every ``I3TASKS`` queue is accepted. ``OPTIONS``:
    ``{"MAX_RETRIES": n}`` retries a failing task ``n`` times (default:
    ``I3TASKS.default_max_retries``, as for ``@TaskDecorator`` tasks).
    """

    #: ``run_after`` becomes our eta: the execution is written *scheduled* and the beat
    #: releases it when due (to the minute: Pub/Sub has no delayed delivery).
    supports_defer = True
    #: ``async def`` tasks run through ``async_to_sync`` in the runner, as ours do.
    supports_async_task = True
    #: Results are rows: any process reads them.
    supports_get_result = True
    #: Pub/Sub delivers in no priority order; a priority other than the default is refused
    #: when the task is defined (``validate_task``), rather than silently ignored.
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        if "QUEUES" not in params:
            # The base class would allow only "default"; an empty set lets validate_task
            # accept any queue of I3TASKS, which it checks itself.
            self.queues = set()

    # -- settings ------------------------------------------------------------------------

    @property
    def max_retries(self) -> int | None:
        value = self.options.get("MAX_RETRIES")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def queue_name(self, api_queue_name: str) -> str:
        """Our queue for the API's ``queue_name``; ``InvalidTask`` naming the configured
        queues when there is none."""
        names = [queue.queue_name for queue in get_settings().queues]
        if api_queue_name in names:
            return api_queue_name
        if api_queue_name == DEFAULT_TASK_QUEUE_NAME:
            return get_settings().default_queue.queue_name
        raise InvalidTask(
            f"Queue {api_queue_name!r} is not a queue of I3TASKS (configured: "
            f"{', '.join(names)}); use one of them, or add a PushQueue/PullQueue named "
            f"{api_queue_name!r} to I3TASKS.other_queues."
        )

    # -- defining tasks ------------------------------------------------------------------

    def validate_task(self, task: ApiTaskDefinition[..., Any]) -> None:
        """The API's rules, our priority and queue rules, then register the task, so that
        the push view and the worker know it (it runs when ``@task`` defines the task)."""
        if task.priority != DEFAULT_PRIORITY:
            raise InvalidTask(
                f"{task_name(task)}: priority={task.priority} cannot be honoured by "
                f"PubSubBackend: Pub/Sub delivers messages in no priority order. Leave the "
                f"default priority ({DEFAULT_PRIORITY}); send urgent work to a queue of its own."
            )
        try:
            queue_name: str | None = self.queue_name(task.queue_name)
        except ImproperlyConfigured:
            queue_name = None  # I3TASKS itself is wrong: our system checks name the problem
        super().validate_task(task)
        if queue_name is not None:
            self._register(task, queue_name)

    def _register(self, task: ApiTaskDefinition[..., Any], queue_name: str) -> ApiTask:
        name = task_name(task)
        existing = registry.get(name)
        if isinstance(existing, ApiTask) and existing.func is task.func:
            return existing  # the same function again: Task.using(), or enqueue()
        if existing is not None and not isinstance(existing, ApiTask):
            raise InvalidTask(
                f"{name} is already a @TaskDecorator task; a function is a task of one API. "
                f"Keep @TaskDecorator (it enqueues with .delay()) or Django's @task, not both."
            )
        # A new function, or a module imported again: the newer definition wins.
        entry = ApiTask(task.func, queue_name=queue_name, max_retries=self.max_retries,
                        definition=task)
        registry.register(entry)
        return entry

    # -- enqueueing ----------------------------------------------------------------------

    def enqueue(self, task: ApiTaskDefinition[Any, Any], args: Any,
                kwargs: Any) -> TaskResult[Any, Any]:
        """Write the execution (and its first try) and publish it once the transaction
        commits, as ``.delay()`` does; with ``run_after`` in the future, write it scheduled
        for the beat to release. Arguments must be JSON (``TypeError`` naming the first one
        that is not, before anything is written)."""
        self.validate_task(task)
        queue_name = self.queue_name(task.queue_name)
        entry = self._register(task, queue_name)
        call = entry.using(queue_name=queue_name, eta=_aware(task.run_after))
        execution = lifecycle.enqueue(call.spec(list(args), dict(kwargs)))
        return build_result(task, execution)

    # -- results -------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """The result of the execution whose uuid is ``result_id``, from our rows;
        ``TaskResultDoesNotExist`` for an unknown id or an execution of a task that is not
        a task of this API in this process (a @TaskDecorator task, or one not imported)."""
        try:
            execution_uuid = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"no task result {result_id!r}") from None
        execution = TaskExecution.objects.filter(uuid=execution_uuid).first()
        if execution is None:
            raise TaskResultDoesNotExist(f"no task result {result_id!r}")
        entry = registry.get(execution.task_name)
        if not isinstance(entry, ApiTask):
            raise TaskResultDoesNotExist(
                f"task result {result_id!r} belongs to {execution.task_name}, which is not a "
                f"task of Django's tasks API in this process"
            )
        return build_result(entry.definition, execution)

    # -- system checks -------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[Any]:
        """``QUEUES`` and ``OPTIONS`` against ``I3TASKS``; run by ``manage.py check``
        through the tasks framework's check."""
        messages: list[Any] = list(super().check(**kwargs))
        where = f"TASKS[{self.alias!r}]"
        if not apps.is_installed("django_i3tasks"):
            messages.append(checks.Error(
                f"{where} uses PubSubBackend but 'django_i3tasks' is not in INSTALLED_APPS.",
                hint="Add 'django_i3tasks' to INSTALLED_APPS.", id="django_i3tasks.E101",
            ))
        for key in sorted(set(self.options) - OPTION_NAMES):
            messages.append(checks.Error(
                f"{where}['OPTIONS'] has an unknown key {key!r}.",
                hint=f"PubSubBackend understands: {', '.join(sorted(OPTION_NAMES))}.",
                id="django_i3tasks.E102",
            ))
        retries = self.options.get("MAX_RETRIES")
        if "MAX_RETRIES" in self.options and (
            self.max_retries is None or not 0 <= self.max_retries <= 1000
        ):
            messages.append(checks.Error(
                f"{where}['OPTIONS']['MAX_RETRIES'] must be a whole number from 0 to 1000, "
                f"not {retries!r}.", hint=None, id="django_i3tasks.E103",
            ))
        try:
            configured = [queue.queue_name for queue in get_settings().queues]
        except ImproperlyConfigured:
            return messages  # I3TASKS itself is wrong: our own checks say why
        for name in sorted(self.queues):
            try:
                self.queue_name(name)
            except InvalidTask:
                messages.append(checks.Error(
                    f"{where}['QUEUES'] names {name!r}, which is not a queue of I3TASKS "
                    f"(configured: {', '.join(configured)}).",
                    hint=f"Add a PushQueue or PullQueue named {name!r} to "
                         f"I3TASKS.other_queues, or remove it from QUEUES.",
                    id="django_i3tasks.E104",
                ))
        return messages


def _aware(run_after: datetime | None) -> datetime | None:
    """``run_after`` as an aware datetime (the API allows naive ones when ``USE_TZ`` is
    off; our eta is always aware)."""
    if run_after is not None and timezone.is_naive(run_after) and not settings.USE_TZ:
        return timezone.make_aware(run_after)
    return run_after
