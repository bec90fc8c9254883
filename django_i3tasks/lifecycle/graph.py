"""Chains and groups: what an execution's end releases, skips or counts.

::

    chain step:  waiting ──previous succeeded──▶ pending (released once)
                 waiting ──previous failed, cancelled, expired or skipped──▶ skipped
                 skipped ──previous retried (admin)──▶ waiting

    group:       pending ──N-th member succeeded──▶ success (callback released once)
                 pending ──a member ended without success──▶ failed (callback skipped)

- **add_step** writes a step *waiting* under the previous execution's row lock
  (``has_next`` is set by the same ``UPDATE``); whoever comes second releases it: this call
  when the previous step already succeeded, else the finishing previous step. So a step is
  neither lost nor dispatched twice.
- **member_succeeded** counts with one conditional ``UPDATE ... RETURNING``; only the
  transaction that counts the last member sees the group turn to success and releases the
  callback (with ``pass_results``, after putting the members' values, read in one query in
  member order, first in its arguments).
- **hand-over** (``.pipe()``): the step released by ``release_next`` or ``add_step`` gets
  the previous step's recorded value first in its arguments, in the transaction that
  releases it. A hand-over over ``max_payload_bytes`` fails the step with
  ``PayloadTooLarge`` instead (``fail_unsent``).
- Ends without success enqueue failure handlers (``handlers``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, cast

from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from ..conf import get_settings
from ..db import update_returning
from ..exceptions import I3TasksError, InvalidTaskOption
from ..messages import check_payload
from ..models import (
    ExecutionStatus,
    GroupStatus,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
    TryStatus,
)
from ..spec import ExecutionSpec
from .enqueue import enqueue, release
from .handlers import Failure, fire

#: Columns an ending's ``UPDATE ... RETURNING`` reads for ``ended``.
ENDED_FIELDS = ["has_next", "group_id", "on_failure"]

_ENDED = (ExecutionStatus.FAILED, ExecutionStatus.SKIPPED, ExecutionStatus.CANCELLED,
          ExecutionStatus.EXPIRED)


def add_step(previous: TaskExecution, spec: ExecutionSpec) -> TaskExecution:
    """Write ``spec`` to run after ``previous`` succeeded (see the module's docstring)."""
    with transaction.atomic():
        rows = update_returning(
            TaskExecution.objects.filter(pk=previous.pk), ["status"], has_next=True
        )
        if not rows:
            raise TaskExecution.DoesNotExist(f"execution {previous.uuid} no longer exists")
        (status,) = rows[0]
        if status == ExecutionStatus.SUCCESS and spec.pipe:
            spec = dataclasses.replace(spec, args=[result_value(previous.pk), *spec.args])
            try:
                check_payload(spec.task_name, spec.args, spec.kwargs,
                              get_settings().max_payload_bytes)
            except I3TasksError as exc:
                step = enqueue(dataclasses.replace(spec, args=spec.args[1:]))
                fail_unsent(step.pk, exc)
                step.refresh_from_db()
                return step
        step = enqueue(spec)
        if status == ExecutionStatus.SUCCESS:
            release([step.pk])
            step.refresh_from_db(fields=["status"])
        elif status in _ENDED:
            skip([step.pk])
            step.status = cast(str, ExecutionStatus.SKIPPED)
    return step


def result_value(execution_id: int) -> Any:
    """The value an execution recorded (JSON, or the string of its ``repr``)."""
    return (TaskExecutionResult.objects.filter(execution_id=execution_id)
            .values_list("value", flat=True).first())


def release_next(execution_id: int) -> None:
    """Dispatch the steps waiting for ``execution_id`` (it just succeeded); ``.pipe()``
    steps get its recorded value first in their arguments."""
    steps = list(
        TaskExecution.objects.filter(previous_id=execution_id, status=ExecutionStatus.WAITING)
        .select_for_update().order_by("pk")
        .values_list("pk", "pipe", "task_name", "args", "kwargs")
    )
    if not steps:
        return
    ready = [pk for pk, pipe, *_ in steps if not pipe]
    piped = [step for step in steps if step[1]]
    if piped:
        value = result_value(execution_id)
        for pk, _, task_name, args, kwargs in piped:
            if hand_over(pk, task_name, [value, *args], kwargs):
                ready.append(pk)
    release(sorted(ready))


def hand_over(step_id: int, task_name: str, args: list[Any], kwargs: dict[str, Any]) -> bool:
    """Write the arguments a waiting step gets from what came before it; False (and the step
    failed for good) when they are over ``max_payload_bytes``."""
    try:
        check_payload(task_name, args, kwargs, get_settings().max_payload_bytes)
    except I3TasksError as exc:
        fail_unsent(step_id, exc)
        return False
    TaskExecution.objects.filter(pk=step_id).update(args=args)
    return True


def fail_unsent(execution_id: int, exc: BaseException) -> None:
    """A waiting step whose hand-over cannot be sent fails for good, its error on a try of
    its own (what comes after it is skipped, its handlers run)."""
    now = timezone.now()
    rows = update_returning(
        TaskExecution.objects.filter(pk=execution_id, status=ExecutionStatus.WAITING),
        [*ENDED_FIELDS, "task_name"], status=ExecutionStatus.FAILED, finished_at=now,
    )
    if rows:
        *fields, task_name = rows[0]
        TaskExecutionTry.objects.create(
            execution_id=execution_id, task_name=task_name, number=1,
            status=TryStatus.FAILED, finished_at=now,
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error_message=str(exc),
        )
        ended(execution_id, *fields)


def skip_after(execution_id: int, failure: Failure | None = None) -> None:
    """Record every step after a failed one as never run."""
    skip(
        TaskExecution.objects.filter(
            previous_id=execution_id, status=ExecutionStatus.WAITING
        ).values_list("pk", flat=True),
        failure or Failure(execution_id),
    )


def skip(execution_ids: Iterable[int], failure: Failure | None = None) -> None:
    """These waiting executions, and every step waiting after them, never run; their
    failure handlers run with ``failure`` (the step that actually failed)."""
    ids = list(execution_ids)
    while ids:
        skipped = update_returning(
            TaskExecution.objects.filter(pk__in=ids, status=ExecutionStatus.WAITING),
            ["id", "on_failure"], status=ExecutionStatus.SKIPPED,
        )
        for pk, handlers in skipped:
            if handlers and failure is not None:
                fire(handlers, pk, failure.get())
        ids = list(
            TaskExecution.objects.filter(
                previous_id__in=ids, status=ExecutionStatus.WAITING
            ).values_list("pk", flat=True)
        )


def unskip_after(execution_ids: list[int]) -> None:
    """Steps skipped after these executions wait for them again (they are being retried)."""
    ids = list(execution_ids)
    while ids:
        ids = list(
            TaskExecution.objects.filter(
                previous_id__in=ids, status=ExecutionStatus.SKIPPED
            ).values_list("pk", flat=True)
        )
        TaskExecution.objects.filter(pk__in=ids).update(status=ExecutionStatus.WAITING)


def ended(execution_id: int, has_next: bool, group_id: int | None,
          on_failure: list[dict[str, Any]] | None = None, failure: Failure | None = None,
          ) -> None:
    """What follows an execution that ended without success (failed for good, cancelled,
    expired): its failure handlers run, its later chain steps are skipped and its group
    fails. ``failure`` describes it when the caller knows it (else it is read if needed)."""
    failure = failure or Failure(execution_id)
    if on_failure:
        fire(on_failure, execution_id, failure.get())
    if has_next:
        skip_after(execution_id, failure)
    if group_id is not None:
        member_failed(group_id, failure)


def create_group(callback: TaskExecution | None, total_count: int, *,
                 pass_results: bool = False,
                 on_failure: dict[str, Any] | None = None) -> TaskGroup:
    """A group of ``total_count`` members whose ``callback`` (a waiting execution) is released
    once all of them succeeded; at once when there are none."""
    if callback is not None and callback.status != ExecutionStatus.WAITING:
        raise InvalidTaskOption(
            "a group callback must not be dispatched yet: use build_chain()"
        )
    with transaction.atomic():
        group = TaskGroup.objects.create(total_count=total_count, callback=callback,
                                         pass_results=pass_results, on_failure=on_failure)
        if total_count == 0:
            updated = TaskGroup.objects.filter(pk=group.pk, status=GroupStatus.PENDING).update(
                status=GroupStatus.SUCCESS, finished_at=timezone.now()
            )
            if updated and callback is not None:
                _release_callback(group.pk, callback.pk, pass_results)
            group.refresh_from_db()
    return group


def _release_callback(group_id: int, callback_id: int, pass_results: bool) -> None:
    """Release a succeeded group's callback; with ``pass_results`` its first argument is
    the list of the members' values in member order, read in ONE query."""
    if pass_results:
        values = list(
            TaskExecution.objects.filter(group_id=group_id)
            .order_by(F("position").asc(nulls_last=True), "pk")
            .values_list("result__value", flat=True)
        )
        row = (TaskExecution.objects.filter(pk=callback_id)
               .values_list("task_name", "args", "kwargs").first())
        if row is None:
            return
        task_name, args, kwargs = row
        if not hand_over(callback_id, task_name, [values, *args], kwargs):
            return
    release([callback_id])


def member_succeeded(group_id: int) -> None:
    """Count one member; the update that counts the last one also marks the group succeeded,
    and only that transaction releases the callback."""
    last = Q(succeeded_count=F("total_count") - 1)
    rows = update_returning(
        TaskGroup.objects.filter(pk=group_id, status=GroupStatus.PENDING),
        ["status", "callback_id", "pass_results"],
        succeeded_count=F("succeeded_count") + 1,
        status=Case(When(last, then=Value(GroupStatus.SUCCESS)), default=F("status")),
        finished_at=Case(When(last, then=Value(timezone.now())), default=F("finished_at")),
    )
    if rows and rows[0][0] == GroupStatus.SUCCESS and rows[0][1] is not None:
        _release_callback(group_id, rows[0][1], rows[0][2])


def member_failed(group_id: int, failure: Failure | None = None) -> None:
    """A member ended without success: the group fails, its callback never runs (its
    handlers do) and the group's handler runs once, with the member's failure."""
    rows = update_returning(
        TaskGroup.objects.filter(pk=group_id, status=GroupStatus.PENDING),
        ["callback_id", "on_failure", "uuid"],
        status=GroupStatus.FAILED,
        failed_count=F("failed_count") + 1,
        finished_at=timezone.now(),
    )
    if rows:
        callback_id, handler, group_uuid = rows[0]
        if callback_id is not None:
            skip([callback_id], failure)
        if handler and failure is not None:
            (execution,) = fire([handler], None,
                                {**failure.get(), "group_uuid": str(group_uuid)})
            TaskGroup.objects.filter(pk=group_id).update(failure_handler=execution)
    else:
        TaskGroup.objects.filter(pk=group_id).update(failed_count=F("failed_count") + 1)
