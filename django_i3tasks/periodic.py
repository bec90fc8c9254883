"""Schedules kept in the database (``PeriodicTask``): what the beat and the admin share.

The beat turns each enabled row into a ``Schedule`` keyed ``periodic:<id>`` and runs it
through the same ``ScheduleState``/``ScheduleSlot`` claim as the settings schedules, so a
row fires once per slot however many beat calls see it, and a missed slot is caught up once.
Rows are read again only when the table changed (count, highest id, revision sum: one
aggregate per beat call).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

from django.db.models import Count, Max, Sum

from .models import PeriodicTask
from .registry import registry
from .types import Schedule

#: ``ScheduleState.key``/``ScheduleSlot.schedule_key`` prefix of a row's schedule.
KEY_PREFIX = "periodic:"


@dataclass(frozen=True)
class StoredSchedule(Schedule):
    """A ``PeriodicTask`` row as the beat runs it: a ``Schedule`` with the row's queue."""

    queue_name: str | None = None
    periodic_id: int | None = None


def cron_error(cron: str) -> str | None:
    """Why ``cron`` is not a valid cron expression (croniter's words), or ``None``."""
    from croniter import croniter

    if not isinstance(cron, str) or not cron.strip():
        return "the cron expression is empty"
    try:
        croniter(cron)
    except Exception as exc:  # noqa: BLE001 - croniter raises several types; all mean invalid
        return f"{cron!r} is not a valid cron expression: {exc}"
    return None


def timezone_error(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(str(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a known time zone (an IANA name such as 'Europe/Rome')"
    return None


def task_error(task_name: str) -> str | None:
    if registry.get(task_name) is None:
        return (f"{task_name!r} is not a registered task in this process (tasks register "
                "when their module is imported: the app's tasks module, or I3TASKS.task_modules)")
    return None


def registered_task_names() -> list[str]:
    return sorted(registry.names())


def fingerprint() -> tuple[int, int, int]:
    """``(rows, highest id, revision sum)``: any save, insert or delete changes it."""
    values = PeriodicTask.objects.aggregate(rows=Count("pk"), top=Max("pk"), sum=Sum("revision"))
    return values["rows"] or 0, values["top"] or 0, values["sum"] or 0


def stored_schedules() -> tuple[StoredSchedule, ...]:
    """The enabled rows as schedules. Nothing is parsed here (10,000 distinct crons would
    cost seconds); the beat parses a row's cron when the row is due, as it does for settings
    schedules, and skips a row whose cron or time zone is invalid."""
    schedules = []
    for pk, task_name, cron, tz, args, kwargs, queue in PeriodicTask.objects.filter(
        enabled=True
    ).values_list("pk", "task_name", "cron", "timezone", "args", "kwargs", "queue_name"):
        module, _, func = task_name.rpartition(".")
        schedules.append(StoredSchedule(
            module, func, cron, list(args) if isinstance(args, list) else [],
            dict(kwargs) if isinstance(kwargs, dict) else {}, timezone=tz,
            name=f"{KEY_PREFIX}{pk}", queue_name=queue or None, periodic_id=pk,
        ))
    return tuple(schedules)
