"""Where Django's tasks API meets our engine: the registry entry of an API task
(``ApiTask``), its ``TaskResult`` read from our rows (``build_result``), the definition an
execution was enqueued with (``definition_of``), and Django's own signals.

Django's ``task_enqueued``, ``task_started`` and ``task_finished`` are sent beside ours, with
the API's ``TaskResult`` and the backend's class as sender (as Django's backends do), in every
outbox mode: they follow our signals, except that ``task_enqueued`` is sent at once with the
recording outbox (as ``DummyBackend`` does; ``PubSubBackend.enqueue`` sends it) and
``task_finished`` only when the execution ends (a try followed by a retry is not the end).
Receivers are called robustly: one that raises is logged by Django and never undoes an outcome.
A failure's ``task_finished`` is sent while the task's exception is being handled, so Django's
log line carries its traceback, as with ``ImmediateBackend``.

Status mapping (our execution -> the API's ``TaskResultStatus``):

- waiting, scheduled, pending (its latest try queued or in its backoff) -> READY
- pending with its latest try running -> RUNNING
- success -> SUCCESSFUL
- failed, skipped, and any other finished state (cancelled, expired) -> FAILED
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from . import signals
from .models import ExecutionStatus, TaskExecution, TryStatus
from .registry import registry
from .results import TaskResult as OurResult
from .task import Task, TaskMetadata
from .tasks_api import (
    ApiTaskDefinition,
    InvalidTask,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    api_signals,
    normalize_json,
    task_backends,
)

__all__ = ["ApiTask", "after_commit", "build_result", "definition_of", "enqueueing", "send",
           "task_name"]

logger = logging.getLogger(__name__)

#: Our states that map to SUCCESSFUL, READY or (with a running try) RUNNING; every other
#: state is a finished failure, so one added later (cancelled, expired) maps to FAILED.
_SUCCESS = str(ExecutionStatus.SUCCESS)
_NOT_STARTED = {str(ExecutionStatus.WAITING), str(ExecutionStatus.SCHEDULED)}
_PENDING = str(ExecutionStatus.PENDING)
#: Our ``task_finished`` statuses after which the execution has ended.
_ENDED = {"success", "failed", "cancelled"}


@dataclass(frozen=True, eq=False, repr=False)
class ApiTask(Task[..., Any]):
    """Our registry's entry for a function decorated with Django's ``@task``.

    It runs like any registered task (``execution.run_message``); only the call differs: a
    ``takes_context=True`` function gets the API's ``TaskContext`` first, whose ``attempt`` is
    our try number, and the return value goes through the API's ``normalize_json``, so one
    that JSON cannot hold fails the try with its ``TypeError`` (``@TaskDecorator`` tasks record
    its ``repr`` instead).
    """

    definition: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.definition is not None and self.definition.takes_context and self._signature:
            # The runner passes the context first: calls bind the parameters after it.
            parameters = list(self._signature.parameters.values())[1:]
            object.__setattr__(self, "_signature",
                               self._signature.replace(parameters=parameters))

    @classmethod
    def of(cls, definition: ApiTaskDefinition[..., Any], *, queue_name: str,
           max_retries: int | None) -> ApiTask:
        """The registered entry of ``definition``."""
        entry = cls(definition.func, queue_name=queue_name, max_retries=max_retries,
                    definition=definition)
        registry.register(entry)
        return entry

    def __repr__(self) -> str:
        return f"<ApiTask {self.name}>"

    def with_retries(self, max_retries: int | None) -> ApiTask:
        """This task enqueued through an alias whose ``MAX_RETRIES`` is ``max_retries``: a
        copy, not registered (the registry keeps one entry per function)."""
        if max_retries == self.max_retries:
            return self
        return dataclasses.replace(self, max_retries=max_retries)

    def run(self, args: Sequence[Any], kwargs: dict[str, Any], metadata: TaskMetadata, *,
            time_limit: float | None = None) -> Any:
        if self.definition.takes_context:
            args = [TaskContext(task_result=self._current_result(metadata)), *args]
        return normalize_json(super().run(args, kwargs, metadata, time_limit=time_limit))

    def _current_result(self, metadata: TaskMetadata) -> TaskResult[..., Any]:
        """The result of the execution being run (RUNNING, ``attempts`` = try number); for a
        plain inline call (``entry(...)``), a result that exists only in memory."""
        if metadata.execution_uuid is not None:
            execution = TaskExecution.objects.filter(uuid=metadata.execution_uuid).first()
            if execution is not None:
                return build_result(definition_of(self, execution), execution)
        now = timezone.now()
        return TaskResult(
            task=self.definition, id="", status=TaskResultStatus("RUNNING"), enqueued_at=None,
            started_at=now, finished_at=None, last_attempted_at=now, args=[], kwargs={},
            backend=self.definition.backend, errors=[], worker_ids=["inline"],
        )


def task_name(definition: ApiTaskDefinition[..., Any]) -> str:
    """The dotted path a task is registered and enqueued under (the API's ``module_path``)."""
    return f"{definition.func.__module__}.{definition.func.__qualname__}"


@dataclass
class Enqueueing:
    """The definition ``PubSubBackend.enqueue`` is writing (a ``Task.using()`` variant), so
    the signals sent meanwhile (inline: all three) name it exactly."""

    definition: ApiTaskDefinition[..., Any]
    announced: bool = False


enqueueing: ContextVar[Enqueueing | None] = ContextVar("i3tasks_api_enqueue", default=None)


class _AfterCommit(threading.local):
    """Executions this thread enqueued whose ``task_enqueued`` comes with the commit: the
    definition to name then, or ``None`` when it was sent at once (recording outbox). Bounded:
    a rolled-back enqueue leaves its entry behind."""

    LIMIT = 1000

    def __init__(self) -> None:
        self.entries: dict[str, ApiTaskDefinition[..., Any] | None] = {}

    def add(self, execution_uuid: str, definition: ApiTaskDefinition[..., Any] | None) -> None:
        if len(self.entries) >= self.LIMIT:
            self.entries.pop(next(iter(self.entries)))
        self.entries[execution_uuid] = definition


after_commit = _AfterCommit()


def definition_of(entry: ApiTask, execution: TaskExecution,
                  alias: str | None = None) -> ApiTaskDefinition[..., Any]:
    """The definition ``execution`` was enqueued with, as its rows tell: the task as defined,
    with the API's name of the execution's queue, its ``run_after`` and the backend ``alias``
    (default: the one the task was defined with). The definition being enqueued in this
    context, when it is this task, wins: it also knows its alias."""
    current = enqueueing.get()
    if current is not None and current.definition.func is entry.func and alias is None:
        return current.definition
    definition = entry.definition
    alias = alias or definition.backend
    changes: dict[str, Any] = {}
    backend = task_backends[alias]
    api_queue_name = getattr(backend, "api_queue_name", None)  # a PubSubBackend's
    if api_queue_name is not None:
        queue = api_queue_name(execution.queue_name, definition.queue_name)
        if queue != definition.queue_name:
            changes["queue_name"] = queue
    if alias != definition.backend:
        changes["backend"] = alias
    if execution.eta is not None and execution.eta != definition.run_after:
        changes["run_after"] = (execution.eta if settings.USE_TZ
                                else timezone.make_naive(execution.eta))
    if not changes:
        return definition
    try:
        return definition.using(**changes)
    except InvalidTask:
        return definition  # the settings changed since: the task as defined


def build_result(definition: ApiTaskDefinition[..., Any],
                 execution: TaskExecution) -> TaskResult[..., Any]:
    """The API's ``TaskResult`` of one execution, mapped from ours (``results.TaskResult.of``,
    the one read model; see the module's status mapping). ``attempts`` counts the tries that
    started; ``errors`` has one entry per failed try, oldest first."""
    ours = OurResult.of(execution)
    started = [t for t in ours.try_records if t.started_at is not None]
    state = ours.status
    if state == _SUCCESS:
        name = "SUCCESSFUL"
    elif state in _NOT_STARTED or state == _PENDING:
        name = "READY"
    elif state == "running":
        name = "RUNNING"
    else:
        name = "FAILED"
    status = TaskResultStatus(name)
    result = TaskResult(
        task=definition,
        id=str(ours.id),
        status=status,
        enqueued_at=ours.enqueued_at,
        started_at=ours.started_at,
        finished_at=ours.finished_at,
        last_attempted_at=started[-1].started_at if started else None,
        args=list(ours.args),
        kwargs=dict(ours.kwargs),
        backend=definition.backend,
        errors=[
            TaskError(exception_class_path=t.error_type, traceback=t.traceback)
            for t in ours.try_records if t.status == TryStatus.FAILED
        ],
        # Our rows record tries, not which process ran them: one id per started try, so
        # that ``attempts`` (their count) is the number of tries run so far.
        worker_ids=[f"try-{t.number}" for t in started],
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", ours.return_value)
    return result


def send(signal: Any, result: TaskResult[..., Any]) -> None:
    """Send one of the API's signals as its backends do (the backend's class as sender),
    robustly: Django logs a receiver that raises, and our outcome stands."""
    signal.send_robust(type(task_backends[result.backend]), task_result=result)


def _send_for(signal: Any, entry: ApiTask, execution_uuid: uuid.UUID,
              definition: ApiTaskDefinition[..., Any] | None = None) -> None:
    try:
        execution = TaskExecution.objects.filter(uuid=execution_uuid).first()
        if execution is None:
            return
        if definition is None:
            definition = definition_of(entry, execution)
        send(signal, build_result(definition, execution))
    except Exception:  # noqa: BLE001 - our signal's other receivers and the outcome go on
        logger.exception("Could not send Django's task signal for execution %s of %s",
                         execution_uuid, entry.name)


def _bridge_enqueued(sender: Any, execution_uuid: uuid.UUID, **kwargs: Any) -> None:
    if not isinstance(sender, ApiTask):
        return
    key = str(execution_uuid)
    current = enqueueing.get()
    definition: ApiTaskDefinition[..., Any] | None = None
    if current is not None and current.definition.func is sender.func:
        current.announced = True
        definition = current.definition
    elif key in after_commit.entries:
        definition = after_commit.entries.pop(key)
        if definition is None:
            return  # announced at once when it was recorded
    _send_for(api_signals.task_enqueued, sender, execution_uuid, definition)


def _bridge_started(sender: Any, execution_uuid: uuid.UUID, **kwargs: Any) -> None:
    if isinstance(sender, ApiTask):
        _send_for(api_signals.task_started, sender, execution_uuid)


def _bridge_finished(sender: Any, execution_uuid: uuid.UUID, status: str,
                     **kwargs: Any) -> None:
    # Sent while the task's exception is being handled, so Django's log line of a failure
    # carries its traceback, as with ImmediateBackend.
    if isinstance(sender, ApiTask) and status in _ENDED:
        _send_for(api_signals.task_finished, sender, execution_uuid)


# Our receivers (their uid says so: they write nothing and never raise, see signals).
signals.task_enqueued.connect(_bridge_enqueued, dispatch_uid=f"{signals.PACKAGE_UID}api.enqueued")
signals.task_started.connect(_bridge_started, dispatch_uid=f"{signals.PACKAGE_UID}api.started")
signals.task_finished.connect(_bridge_finished, dispatch_uid=f"{signals.PACKAGE_UID}api.finished")
