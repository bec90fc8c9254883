"""What an operator asks of the executions: list, show, retry, cancel, stats. The
``manage.py i3tasks`` command is a thin shell over these (tables or JSON); each returns plain
data (JSON-ready dicts) so other front ends can reuse them.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min
from django.utils import timezone

from . import lifecycle, stats
from .db import unique_row
from .exceptions import I3TasksError
from .models import ExecutionStatus, TaskExecution, TaskExecutionResult


class OperationsUsageError(I3TasksError, ValueError):
    """An operator command was given a value it cannot use (a bad ``--since``, uuid...)."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``2d``, ``1w`` as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise OperationsUsageError(
            f"--since {text!r}: expected a positive number and a unit s, m, h, d or w (e.g. 1h)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_uuids(values: list[str]) -> list[uuid.UUID]:
    parsed = []
    for value in values:
        try:
            parsed.append(uuid.UUID(value))
        except ValueError:
            raise OperationsUsageError(f"{value!r} is not an execution uuid") from None
    return parsed


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 6) if start and end else None


def list_executions(*, status: str | None = None, task: str | None = None,
                    queue: str | None = None, since: timedelta | None = None,
                    limit: int = 50) -> list[dict[str, Any]]:
    """The newest executions matching the filters, with try counts and run span."""
    if status is not None and status not in ExecutionStatus.values:
        raise OperationsUsageError(
            f"--status {status!r}: one of {', '.join(ExecutionStatus.values)}")
    if limit < 1:
        raise OperationsUsageError("--limit must be 1 or more")
    queryset = TaskExecution.objects.all()
    if status:
        queryset = queryset.filter(status=status)
    if task:
        queryset = queryset.filter(task_name=task)
    if queue:
        queryset = queryset.filter(queue_name=queue)
    if since is not None:
        queryset = queryset.filter(created_at__gte=timezone.now() - since)
    rows = queryset.order_by("-created_at", "-pk").annotate(
        tries_count=Count("tries"), first_start=Min("tries__started_at"),
        last_finish=Max("tries__finished_at"),
    )[:limit]
    return [{
        "uuid": str(e.uuid), "task": e.task_name, "status": e.status, "queue": e.queue_name,
        "tries": e.tries_count, "created_at": _iso(e.created_at),
        "finished_at": _iso(e.finished_at),
        "duration": _seconds(e.first_start, e.last_finish) if e.finished_at else None,
    } for e in rows]


def show(execution_uuid: uuid.UUID) -> dict[str, Any] | None:
    """One execution with its call, tries (errors included), result, chain and group."""
    execution = unique_row(TaskExecution.objects.select_related("group", "previous")
                           .filter(uuid=execution_uuid))
    if execution is None:
        return None
    tries = [{
        "number": t.number, "status": t.status, "enqueued_at": _iso(t.enqueued_at),
        "started_at": _iso(t.started_at), "finished_at": _iso(t.finished_at),
        "duration": t.duration, "queue_delay": _seconds(t.not_before, t.started_at),
        "claims": t.claims, "error_type": t.error_type, "error_message": t.error_message,
        "traceback": t.traceback,
    } for t in execution.tries.order_by("number")]
    result = TaskExecutionResult.objects.filter(execution=execution).first()
    group = execution.group
    return {
        "uuid": str(execution.uuid), "task": execution.task_name, "status": execution.status,
        "queue": execution.queue_name, "args": execution.args, "kwargs": execution.kwargs,
        "max_retries": execution.max_retries, "created_at": _iso(execution.created_at),
        "eta": _iso(execution.eta), "finished_at": _iso(execution.finished_at),
        "tries": tries,
        "result": None if result is None else {"value": result.value, "is_repr": result.is_repr},
        "chain": {
            "previous": str(execution.previous.uuid) if execution.previous else None,
            "next": [str(u) for u in execution.next_steps.values_list("uuid", flat=True)],
        },
        "group": None if group is None else {
            "uuid": str(group.uuid), "status": group.status, "total": group.total_count,
            "succeeded": group.succeeded_count, "failed": group.failed_count,
        },
    }


def _resolve(uuids: list[uuid.UUID]) -> tuple[dict[uuid.UUID, int], list[str]]:
    found = dict(TaskExecution.objects.filter(uuid__in=uuids).values_list("uuid", "pk"))
    return found, [str(u) for u in uuids if u not in found]


def retry(uuids: list[uuid.UUID]) -> dict[str, list[str]]:
    """Retry failed executions: ``{"retried", "not_failed", "unknown"}`` (uuids)."""
    found, unknown = _resolve(uuids)
    pks = list(found.values())
    retried = {str(e.uuid) for e in lifecycle.retry(pks)} if pks else set()
    return {"retried": sorted(retried),
            "not_failed": sorted(str(u) for u in found if str(u) not in retried),
            "unknown": unknown}


def retry_failed(*, task: str | None = None, since: timedelta | None = None) -> dict[str, Any]:
    """Retry every failed execution (of ``task``, finished within ``since``)."""
    queryset = TaskExecution.objects.filter(status=ExecutionStatus.FAILED)
    if task:
        queryset = queryset.filter(task_name=task)
    if since is not None:
        queryset = queryset.filter(finished_at__gte=timezone.now() - since)
    pks = list(queryset.order_by("pk").values_list("pk", flat=True))
    retried = [str(e.uuid) for e in lifecycle.retry(pks)] if pks else []
    return {"retried": retried, "not_failed": [], "unknown": []}


def cancel(uuids: list[uuid.UUID]) -> dict[str, list[str]]:
    """Cancel executions: ``{"cancelled", "finished", "unknown"}`` (already finished ones
    are left alone)."""
    found, unknown = _resolve(uuids)
    done: list[str] = []
    left: list[str] = []
    for execution_uuid, pk in found.items():
        (done if lifecycle.cancel(pk) else left).append(str(execution_uuid))
    return {"cancelled": sorted(done), "finished": sorted(left), "unknown": unknown}


def task_stats(since: timedelta) -> list[dict[str, Any]]:
    return stats.stats(timezone.now() - since)
