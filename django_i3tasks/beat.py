"""The beat: what Cloud Scheduler's call of ``tasks-beat/`` does every minute.

1. **Schedules.** For every ``Schedule`` the latest cron slot at or before the slot time is
   due when it lies within ``beat_catch_up_seconds``. Each due slot is claimed by inserting a
   unique ``ScheduleSlot`` row; only the call that inserted the row enqueues the task, in the
   same transaction. So a repeated, concurrent or late call cannot enqueue a slot twice, and
   after downtime only the latest missed slot of each schedule runs (once), not one per
   missed minute.
2. **Delayed tasks.** Executions stored as *scheduled* (``countdown``/``eta``) whose time has
   come are released: Pub/Sub has no delayed delivery.
3. **Lost messages.** A try that stayed queued (or whose lease ran out) for longer than
   ``recovery_after_seconds`` is published again. Claiming a try is idempotent, so this never
   runs a task twice; it only brings back a message that never arrived.
"""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import lifecycle, outbox
from .conf import get_settings
from .db import insert_new
from .models import ExecutionStatus, ScheduleSlot, TaskExecution, TaskExecutionTry, TryStatus
from .registry import registry
from .types import Schedule

logger = logging.getLogger(__name__)

#: At most this many delayed executions and lost tries are handled per beat call; the rest
#: wait for the next minute, so one call stays short.
BATCH_LIMIT = 1000
#: How far in the future a ``X-CloudScheduler-ScheduleTime`` may lie (clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=2)
UTC = dt_timezone.utc


@dataclass
class BeatReport:
    """What one beat call did; the endpoint answers it as JSON."""

    slot_time: datetime
    enqueued: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    released: int = 0
    republished: int = 0
    #: Schedules whose latest slot this process already knows to be done (no query needed).
    unchanged: int = 0
    #: Messages of this call that Pub/Sub did not confirm (the recovery sweep republishes
    #: them after ``recovery_after_seconds``).
    publish_failed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "slot_time": self.slot_time.isoformat(),
            "enqueued": self.enqueued,
            "skipped": self.skipped,
            "unchanged": self.unchanged,
            "released": self.released,
            "republished": self.republished,
            "publish_failed": self.publish_failed,
        }


def parse_schedule_time(value: str, now: datetime | None = None) -> datetime:
    """The ``X-CloudScheduler-ScheduleTime`` header (RFC 3339) as an aware UTC datetime."""
    parsed = parse_datetime(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    if parsed is None or timezone.is_naive(parsed):
        raise ValueError(f"X-CloudScheduler-ScheduleTime {value[:64]!r} is not an RFC 3339 time")
    parsed = parsed.astimezone(UTC)
    if parsed > (now or timezone.now()) + MAX_CLOCK_SKEW:
        raise ValueError("X-CloudScheduler-ScheduleTime lies in the future")
    return parsed


def _slot_window(cron: str, tz_name: str, minute: datetime) -> tuple[datetime, datetime]:
    """``(latest slot <= minute, next slot)`` in UTC for a cron expression in a time zone."""
    from croniter import croniter

    local = minute.astimezone(zoneinfo.ZoneInfo(tz_name)) + timedelta(seconds=1)
    it = croniter(cron, local)
    previous = it.get_prev(datetime)
    # The slot after the latest one is the next one: nothing lies between them.
    following = it.get_next(datetime)
    return previous.astimezone(UTC), following.astimezone(UTC)


class _SlotCache:
    """Per process: each cron's latest slot stays valid until its next slot, so a steady
    beat recomputes a daily schedule once a day, not every minute."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], tuple[datetime, datetime]] = {}

    def latest(self, cron: str, tz_name: str, minute: datetime) -> datetime:
        key = (cron, tz_name)
        window = self._windows.get(key)
        if window is None or not window[0] <= minute < window[1]:
            window = _slot_window(cron, tz_name, minute)
            self._windows[key] = window
        return window[0]


_slots = _SlotCache()
#: Per process: the latest slot of each schedule known to be done (claimed by this process or
#: found claimed). A steady beat then only goes to the database for new slots. Rows are
#: never un-claimed, so what is known done stays done.
_handled: dict[str, datetime] = {}


def forget() -> None:
    """Drop this process's caches (tests that swap databases under a running process)."""
    global _slots
    _slots = _SlotCache()
    _handled.clear()


def latest_slot(schedule: Schedule, at: datetime) -> datetime:
    """The latest slot of ``schedule`` at or before ``at`` (UTC, whole minutes)."""
    minute = at.astimezone(UTC).replace(second=0, microsecond=0)
    return _slots.latest(schedule.cron, str(schedule.timezone), minute)


def fire_schedules(at: datetime, report: BeatReport) -> None:
    """Claim and enqueue every due slot that no call has claimed before."""
    conf = get_settings()
    oldest = at - timedelta(seconds=conf.beat_catch_up_seconds)
    due: dict[tuple[str, datetime], Schedule] = {}
    for schedule in conf.schedules:
        slot = latest_slot(schedule, at)
        if slot < oldest:
            continue
        if _handled.get(schedule.key) == slot:
            report.unchanged += 1
        else:
            due[(schedule.key, slot)] = schedule
    if not due:
        return
    now = timezone.now()
    ordered = sorted(due.items(), key=lambda item: item[0])
    uuids = {slot_key: uuid.uuid4() for slot_key, _ in ordered}
    rows = [
        {"schedule_key": key, "slot": slot, "execution_uuid": uuids[(key, slot)],
         "created_at": now}
        for (key, slot), _ in ordered
    ]
    with transaction.atomic():
        won = set(insert_new(ScheduleSlot, rows, ["schedule_key", "slot"],
                             ["schedule_key", "slot"]))
        calls, entries = [], []
        for (key, slot), schedule in ordered:
            task = registry.get(schedule.task_name)
            entry = {"schedule": key, "slot": slot.isoformat()}
            if (key, slot) not in won:
                report.skipped.append({**entry, "reason": "already_enqueued"})
            elif task is None:  # the system check reports it; never import by name here
                report.skipped.append({**entry, "reason": "unknown_task"})
            else:
                calls.append((task, schedule.args, schedule.kwargs))
                entries.append((entry, uuids[(key, slot)]))
        lifecycle.enqueue_calls(calls, uuids=[execution_uuid for _, execution_uuid in entries])
        done = {key: slot for key, slot in due}
        transaction.on_commit(lambda: _handled.update(done))
    for entry, execution_uuid in entries:
        entry["execution"] = str(execution_uuid)
        report.enqueued.append(entry)
        logger.info("Beat enqueued %s for slot %s", entry["schedule"], entry["slot"])


def release_due(now: datetime) -> int:
    """Publish the delayed executions whose time has come."""
    ids = list(
        TaskExecution.objects.filter(status=ExecutionStatus.SCHEDULED, eta__lte=now)
        .order_by("eta")
        .values_list("pk", flat=True)[:BATCH_LIMIT]
    )
    if not ids:
        return 0
    with transaction.atomic():
        return len(lifecycle.release(ids))


def recover_lost(now: datetime) -> int:
    """Publish again the tries that should have started long ago (lost or dropped messages)."""
    cutoff = now - timedelta(seconds=get_settings().recovery_after_seconds)
    stuck = (
        Q(status=TryStatus.QUEUED, not_before__lt=cutoff)
        | Q(status=TryStatus.RUNNING, lease_expires_at__lt=cutoff)
    ) & (Q(republished_at__isnull=True) | Q(republished_at__lt=cutoff))
    ids = list(
        TaskExecutionTry.objects.filter(stuck, execution__status=ExecutionStatus.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)[:BATCH_LIMIT]
    )
    if not ids:
        return 0
    messages = lifecycle.republish(TaskExecutionTry.objects.filter(stuck, pk__in=ids), now)
    for message in messages:
        logger.warning(
            "Beat republished try %s of %s (%s): it did not start within %s s",
            message.try_number, message.execution_uuid, message.task_name,
            get_settings().recovery_after_seconds,
        )
    return len(messages)


def run_beat(schedule_time: datetime | None = None, now: datetime | None = None) -> BeatReport:
    """One beat: schedules at ``schedule_time`` (default now), delayed tasks, lost messages.

    ``now`` exists for tests and the benchmark; the endpoint and ``i3tasks_beat`` pass the
    scheduler's slot time only.
    """
    now = now or timezone.now()
    at = schedule_time or now
    report = BeatReport(slot_time=at)
    with outbox.delivering() as delivery:
        fire_schedules(at, report)
        report.released = release_due(now)
        report.republished = recover_lost(now)
    report.publish_failed = delivery.failed
    return report
