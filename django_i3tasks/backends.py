"""``PubSubBackend``: django-i3tasks as a backend of Django's tasks API.

``TASKS = {"default": {"BACKEND": "django_i3tasks.backends.PubSubBackend"}}`` makes functions
decorated with Django's ``@task`` run on this package's engine: ``.enqueue()`` writes the same
rows as ``.delay()`` and publishes through the same outbox (after commit), the push view and the
pull worker run the message with the same runner (claim, run, record: a duplicate delivery
runs nothing), and ``get_result()`` reads the rows back.

The API is ``django.tasks`` on Django 6 and the ``django-tasks`` backport (0.10+) before it
(``tasks_api``). Django's API has no workflows (chains, ``pipe``, groups, failure
handlers): those are on ``@TaskDecorator`` tasks. Tasks are registered in our registry when
Django's ``@task`` defines them (``validate_task`` runs at definition), as ``ApiTask``
entries, so a message still only runs a registered function and never imports a module it
names. Results, Django's signals and the status mapping: ``api_bridge``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import lifecycle, outbox, spec
from .api_bridge import (
    ApiTask,
    Enqueueing,
    after_commit,
    build_result,
    definition_of,
    enqueueing,
    send,
    task_name,
)
from .conf import get_settings
from .exceptions import ArgumentsNotSerializable
from .models import ExecutionStatus, TaskExecution
from .registry import registry
from .tasks_api import (
    DEFAULT_TASK_QUEUE_NAME,
    TASKS_API,
    ApiTaskDefinition,
    BaseTaskBackend,
    InvalidTask,
    TaskContext,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    api_signals,
    normalize_json,
)

__all__ = [
    "TASKS_API", "ApiTask", "BaseTaskBackend", "InvalidTask", "PubSubBackend", "TaskContext",
    "TaskResult", "TaskResultDoesNotExist", "TaskResultStatus", "build_result",
]

#: Priority every task has unless it sets one (both APIs use 0).
DEFAULT_PRIORITY = 0
#: ``OPTIONS`` keys the backend understands.
OPTION_NAMES = frozenset({"MAX_RETRIES"})


class PubSubBackend(BaseTaskBackend):
    """Django's tasks API on django-i3tasks (Pub/Sub push, rows per execution and try).

    ``QUEUES`` are names of ``I3TASKS`` queues (``PushQueue``/``PullQueue``); the API's
    ``"default"`` means ``I3TASKS.default_queue`` unless a queue is named ``"default"``.
    Without ``QUEUES`` every ``I3TASKS`` queue is accepted. ``OPTIONS``:
    ``{"MAX_RETRIES": n}`` retries a failing task ``n`` times (default:
    ``I3TASKS.default_max_retries``, as for ``@TaskDecorator`` tasks); it applies to what is
    enqueued through this alias, also with ``Task.using(backend=...)``.
    """

    #: ``run_after`` becomes our eta: the execution is written *scheduled* and the beat
    #: releases it when due (to the minute: Pub/Sub has no delayed delivery).
    supports_defer = True
    #: ``async def`` tasks run through ``async_to_sync`` in the runner, as ours do.
    supports_async_task = True
    #: Results are rows: any process reads them.
    supports_get_result = True
    #: Pub/Sub delivers in no priority order: the API refuses a priority other than the
    #: default when the task is defined, rather than letting it be silently ignored.
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
        """Our queue for the API's ``queue_name``; ``InvalidTask`` (the API's words, then
        the configured queues) when there is none."""
        names = [queue.queue_name for queue in get_settings().queues]
        if api_queue_name in names:
            return api_queue_name
        if api_queue_name == DEFAULT_TASK_QUEUE_NAME:
            return get_settings().default_queue.queue_name
        raise InvalidTask(
            f"Queue {api_queue_name!r} is not valid for backend: it is not a queue of "
            f"I3TASKS (configured: {', '.join(names)}); use one of them, or add a "
            f"PushQueue/PullQueue named {api_queue_name!r} to I3TASKS.other_queues."
        )

    def api_queue_name(self, queue_name: str, preferred: str) -> str:
        """The API's name of our queue ``queue_name``: ``preferred`` (a task's own) when it
        maps there, else the name itself, or ``"default"`` for the default queue when this
        backend does not accept its own name."""
        try:
            if self.queue_name(preferred) == queue_name:
                return preferred
        except InvalidTask:
            pass
        if (queue_name == get_settings().default_queue.queue_name and self.queues
                and queue_name not in self.queues):
            return DEFAULT_TASK_QUEUE_NAME
        return queue_name

    # -- defining tasks ------------------------------------------------------------------

    def validate_task(self, task: ApiTaskDefinition[..., Any]) -> None:
        """The API's rules (its own messages first), then our queue rule, then register the
        task, so that the push view and the worker know it (it runs when ``@task`` defines
        the task)."""
        try:
            super().validate_task(task)
        except InvalidTask as exc:
            hint = self._hint(task)
            if hint:
                raise InvalidTask(f"{exc} {hint}") from None
            raise
        try:
            queue_name: str | None = self.queue_name(task.queue_name)
        except ImproperlyConfigured:
            queue_name = None  # I3TASKS itself is wrong: our system checks name the problem
        if queue_name is not None:
            self._register(task, queue_name)

    def _hint(self, task: ApiTaskDefinition[..., Any]) -> str:
        """Why PubSubBackend refuses what the API refused, when it has a reason of its own."""
        if not self.supports_priority and task.priority != DEFAULT_PRIORITY:
            return (f"PubSubBackend: Pub/Sub delivers messages in no priority order; leave "
                    f"the default priority ({DEFAULT_PRIORITY}) and send urgent work to a "
                    f"queue of its own.")
        if self.queues and task.queue_name not in self.queues:
            return f"TASKS[{self.alias!r}]['QUEUES'] is {sorted(self.queues)}."
        return ""

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
        return ApiTask.of(task, queue_name=queue_name, max_retries=self.max_retries)

    # -- enqueueing ----------------------------------------------------------------------

    def enqueue(self, task: ApiTaskDefinition[Any, Any], args: Any,
                kwargs: Any) -> TaskResult[Any, Any]:
        """Write the execution (and its first try) and publish it once the transaction
        commits, as ``.delay()`` does; with ``run_after`` in the future, write it scheduled
        for the beat to release. Arguments are normalised as the API does (a ``TypeError``
        "Unsupported type", before anything is written); this alias's ``MAX_RETRIES``
        applies."""
        self.validate_task(task)
        args, kwargs = _json_arguments(task, args, kwargs)
        queue_name = self.queue_name(task.queue_name)
        entry = self._register(task, queue_name).with_retries(self.max_retries)
        sink = outbox.get_outbox()
        state = Enqueueing(task)
        token = enqueueing.set(state)
        try:
            call = entry.using(queue_name=queue_name, eta=_aware(task.run_after))
            execution = lifecycle.enqueue(call.spec(args, kwargs))
        finally:
            enqueueing.reset(token)
        result = build_result(task, execution)
        if not state.announced and execution.status != ExecutionStatus.SCHEDULED:
            if isinstance(sink, outbox.RecordingOutbox):
                # Recorded at once (a test's transaction may never commit), as DummyBackend
                # announces at once; the commit, if it comes, does not announce it again.
                after_commit.add(result.id, None)
                send(api_signals.task_enqueued, result)
            else:
                after_commit.add(result.id, task)
        return result

    # -- results -------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """The result of the execution whose uuid is ``result_id``, from our rows, its task
        as enqueued (queue, ``run_after``) through this alias; ``TaskResultDoesNotExist`` for
        an unknown id or an execution of a task that is not a task of this API in this
        process (a @TaskDecorator task, or one not imported)."""
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
        return build_result(definition_of(entry, execution, self.alias), execution)

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


def _json_arguments(task: ApiTaskDefinition[..., Any], args: Any,
                    kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments as the API normalises them (tuples become lists, UTF-8 bytes
    text). When JSON cannot hold one: ``ArgumentsNotSerializable`` (a ``TypeError``) whose
    message is the API's ("Unsupported type: ...") followed by ours, naming the argument."""
    try:
        normalized_args = cast("list[Any]", normalize_json(list(args)))
        normalized_kwargs = cast("dict[str, Any]", normalize_json(dict(kwargs)))
    except TypeError as exc:
        ours = ""
        try:
            spec.payload(task_name(task), list(args), dict(kwargs))
        except ArgumentsNotSerializable as detail:
            ours = f"; {detail}"
        raise ArgumentsNotSerializable(f"{exc}{ours}") from exc
    return normalized_args, normalized_kwargs


# --- Django's signals, beside ours ----------------------------------------------------------

