"""The beat: what Cloud Scheduler's call of ``tasks-beat/`` does every minute.

1. **Schedules.** For every ``Schedule`` the latest cron slot at or before the slot time is
   due when it lies within ``beat_catch_up_seconds``. Each due slot is claimed by inserting a
   unique ``ScheduleSlot`` row; only the call that inserted the row enqueues the task, in the
   same transaction. So a repeated, concurrent or late call cannot enqueue a slot twice, and
   after downtime only the latest missed slot of each schedule runs (once), not one per
   missed minute. ``PeriodicTask`` rows (schedules edited in the admin) join the settings
   schedules here, keyed ``periodic:<id>``, through the same state and slot rows.
2. **Delayed tasks.** Executions stored as *scheduled* (``countdown``/``eta``) whose time has
   come are released: Pub/Sub has no delayed delivery.
3. **Lost messages.** A try that stayed queued (or whose lease ran out) for longer than
   ``recovery_after_seconds`` is published again. Claiming a try is idempotent, so this never
   runs a task twice; it only brings back a message that never arrived.
"""

from __future__ import annotations

import logging
import threading
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import lifecycle, outbox, periodic, queries
from .conf import get_settings
from .db import count_new, insert_new, json_rows, without_jit
from .models import (
    ExecutionStatus,
    ScheduleSlot,
    ScheduleState,
    TaskExecution,
    TaskExecutionTry,
    TryStatus,
)
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

    def window(self, cron: str, tz_name: str, minute: datetime) -> tuple[datetime, datetime]:
        key = (cron, tz_name)
        window = self._windows.get(key)
        if window is None or not window[0] <= minute < window[1]:
            window = _slot_window(cron, tz_name, minute)
            self._windows[key] = window
        return window

    def latest(self, cron: str, tz_name: str, minute: datetime) -> datetime:
        return self.window(cron, tz_name, minute)[0]


#: ``next_fire`` of a state row never evaluated: due at the next call.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
#: Rows per statement when the state table is written in bulk.
STATE_CHUNK = 2000


def _spec(schedule: Schedule) -> str:
    return f"{schedule.timezone} {schedule.cron}"


@dataclass
class _Book:
    """Per process: the configured schedules by key, and the settings value they were synced
    into ``ScheduleState`` for (a new settings value, e.g. a test's, syncs again)."""

    source: tuple[Schedule, ...] | None = None
    #: ``periodic.fingerprint()`` of the ``PeriodicTask`` rows synced with them.
    stored: tuple[int, int, int] | None = None
    by_key: dict[str, Schedule] = field(default_factory=dict)
    #: The next sync starts the state table afresh (set by ``forget()``).
    rebuild: bool = False


_slots = _SlotCache()
_book = _Book()
_book_lock = threading.Lock()


def forget(*, keep_state: bool = False) -> None:
    """Drop what this process remembers (tests that swap databases under a running process).

    By default the next call also rebuilds the schedule-state table from the settings, so it
    behaves like an instance that knows nothing: every schedule's latest slot is checked
    against the ``ScheduleSlot`` rows again. ``keep_state=True`` only empties the caches, as a
    restarted process has them.
    """
    global _slots, _book
    with _book_lock:
        _slots = _SlotCache()
        _book = _Book(rebuild=not keep_state)


def latest_slot(schedule: Schedule, at: datetime) -> datetime:
    """The latest slot of ``schedule`` at or before ``at`` (UTC, whole minutes)."""
    minute = at.astimezone(UTC).replace(second=0, microsecond=0)
    return _slots.latest(schedule.cron, str(schedule.timezone), minute)


def _sync(schedules: tuple[Schedule, ...], rebuild: bool) -> dict[str, Schedule]:
    """Make ``ScheduleState`` hold one row per configured schedule; parses no cron.

    Rows of removed schedules go; a new schedule, or one whose cron or time zone changed, gets
    a row that is due at once (its latest slot is computed when it is selected). Concurrent
    syncs insert with ``ON CONFLICT DO NOTHING``, so they cannot fail on each other.
    """
    by_key = {schedule.key: schedule for schedule in schedules}
    with transaction.atomic():
        if rebuild:
            ScheduleState.objects.all().delete()
            stored: dict[str, tuple[int, str]] = {}
        else:
            stored = {key: (pk, spec) for pk, key, spec in
                      ScheduleState.objects.values_list("pk", "key", "spec")}
        stale = [pk for key, (pk, spec) in stored.items()
                 if key not in by_key or spec != _spec(by_key[key])]
        for start in range(0, len(stale), STATE_CHUNK):
            ScheduleState.objects.filter(pk__in=stale[start:start + STATE_CHUNK]).delete()
        kept = {key for key, (_, spec) in stored.items()
                if key in by_key and spec == _spec(by_key[key])}
        rows = [{"key": key, "spec": _spec(schedule), "next_fire": NEVER, "last_slot": None}
                for key, schedule in by_key.items() if key not in kept]
        insert_new(ScheduleState, rows, ["key"], ["id"])
    return by_key


def _configured(schedules: tuple[Schedule, ...], lost_rows: bool = False,
                stored: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Schedule]:
    """The schedules by key (settings and ``PeriodicTask`` rows), synced into the state table
    once per process, settings value and ``stored`` fingerprint of the rows (again when state
    rows went missing)."""
    global _book
    with _book_lock:
        if (_book.source is not schedules or _book.stored != stored or lost_rows
                or _book.rebuild):
            rows = periodic.stored_schedules() if stored[0] else ()
            by_key = _sync(schedules + rows, rebuild=_book.rebuild)
            _book = _Book(source=schedules, stored=stored, by_key=by_key)
        return _book.by_key


def _advance(rows: list[tuple[int, datetime, datetime | None, str | None]]) -> None:
    """Move due rows' ``next_fire`` forward (never back: a late call for an earlier minute
    leaves them alone), with their ``last_slot`` and, for a row written by settings that
    differ from ours (a rolling deploy), our spec: one ``UPDATE ... FROM unnest(arrays)`` on
    PostgreSQL, one ``UPDATE ... FROM (VALUES ...)`` per chunk on SQLite.

    A failure here is logged, not raised: the slots are committed already, and a row left
    behind is only selected again and answered by its ``ScheduleSlot`` row.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(ScheduleState)]
    meta = ScheduleState._meta
    try:
        with transaction.atomic(using=connection.alias):
            if connection.vendor not in ("postgresql", "sqlite"):
                for pk, following, latest, spec in rows:
                    values: dict[str, Any] = {"next_fire": following}
                    queryset = ScheduleState.objects.filter(pk=pk)
                    if latest is not None:
                        values["last_slot"] = latest
                    if spec is None:
                        queryset = queryset.filter(next_fire__lt=following)
                    else:
                        values["spec"] = spec
                    queryset.update(**values)
                return
            moment: Any = meta.get_field("next_fire")
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # One JSON parameter, however many rows: cheap to send and to parse.
                    fields = [meta.get_field(n) for n in ("id", "next_fire", "last_slot", "spec")]
                    document, picks = json_rows(fields, rows, connection)
                    without_jit(cursor, connection, len(rows))
                    cursor.execute(queries.advance_schedule_states(connection, picks=picks),
                                   [document])
                    return
                for start in range(0, len(rows), STATE_CHUNK):
                    chunk = rows[start:start + STATE_CHUNK]
                    params: list[Any] = []
                    for pk, nxt, last, theirs in chunk:
                        params += [pk, moment.get_db_prep_value(nxt, connection),
                                   moment.get_db_prep_value(last, connection), theirs]
                    cursor.execute(
                        queries.advance_schedule_states(connection, rows=len(chunk)), params)
    except DatabaseError:
        logger.warning("Beat: could not record the next slot of %d schedule(s); the next call "
                       "checks them again", len(rows), exc_info=True)


def fire_schedules(at: datetime, report: BeatReport) -> None:
    """Claim and enqueue every due slot that no call has claimed before.

    Only the schedules whose ``next_fire`` has come are read (by index) and evaluated, so a
    call costs in proportion to what is due, plus one count over the state table.
    """
    conf = get_settings()
    stored = periodic.fingerprint()
    if (not conf.schedules and not stored[0] and _book.source is conf.schedules
            and _book.stored == stored and not _book.rebuild):
        return  # nothing configured, and the table was emptied when that was synced
    oldest = at - timedelta(seconds=conf.beat_catch_up_seconds)
    minute = at.astimezone(UTC).replace(second=0, microsecond=0)
    by_key = _configured(conf.schedules, stored=stored)
    counts = ScheduleState.objects.aggregate(
        total=Count("pk"),
        unchanged=Count("pk", filter=Q(last_slot__gte=oldest, next_fire__gt=at)),
    )
    if counts["total"] < len(by_key):  # rows went missing (e.g. deleted by hand): sync again
        by_key = _configured(conf.schedules, lost_rows=True, stored=stored)
    report.unchanged = counts["unchanged"]
    due: dict[tuple[str, datetime], Schedule] = {}
    moves: list[tuple[int, datetime, datetime | None, str | None]] = []
    for pk, key, spec in ScheduleState.objects.filter(next_fire__lte=at).values_list(
        "pk", "key", "spec"
    ):
        schedule = by_key.get(key)
        if schedule is None:  # another deploy's schedule: left to the processes that know it
            continue
        try:
            latest, following = _slots.window(schedule.cron, str(schedule.timezone), minute)
        except Exception:  # noqa: BLE001 - a row written around the admin's checks
            if not isinstance(schedule, periodic.StoredSchedule):
                raise  # settings schedules are checked at startup (checks.py)
            report.skipped.append({"schedule": key, "slot": "", "reason": "invalid_schedule"})
            logger.warning("Beat: %s has an invalid cron %r or time zone %r", key,
                           schedule.cron, schedule.timezone)
            continue
        ours = _spec(schedule)
        theirs = None if spec == ours else ours
        if latest < oldest:  # older than beat_catch_up_seconds: given up
            moves.append((pk, following, None, theirs))
        else:
            due[(key, latest)] = schedule
            moves.append((pk, following, latest, theirs))
    if due:
        _claim(due, report)
    _advance(moves)


def _won(rows: list[dict[str, Any]], written: int) -> set[str]:
    """The schedule keys of the slot ``rows`` this call inserted, ``written`` of them: all in
    the usual minute; else those whose stored slot carries this call's execution uuid
    (another beat call inserted the others first)."""
    if written == len(rows):
        return {row["schedule_key"] for row in rows}
    won: set[str] = set()
    for start in range(0, len(rows), WON_CHUNK):
        chunk = rows[start:start + WON_CHUNK]
        won.update(ScheduleSlot.objects.filter(
            schedule_key__in=[row["schedule_key"] for row in chunk],
            execution_uuid__in=[row["execution_uuid"] for row in chunk],
        ).values_list("schedule_key", flat=True))
    return won


#: Slot rows looked up per query when another beat call won some of them.
WON_CHUNK = 1000


def _claim(due: dict[tuple[str, datetime], Schedule], report: BeatReport) -> None:
    """Insert the due slots' rows; enqueue the tasks of the slots this call inserted.

    ``due`` holds at most one slot per schedule (its latest), so the schedule keys returned
    by the insert say which slots this call won."""
    now = timezone.now()
    ordered = sorted(due.items(), key=lambda item: item[0])
    slots = []
    for (key, slot), schedule in ordered:
        execution_uuid = uuid.uuid4()
        slots.append((key, slot, schedule, execution_uuid, str(execution_uuid)))
    # The uuid as text once (the slot row, the report); a minute's schedules share a few slot
    # times, each written as text once.
    rows = [
        {"schedule_key": key, "slot": slot, "execution_uuid": text, "created_at": now}
        for key, slot, _, _, text in slots
    ]
    slot_texts: dict[datetime, str] = {}
    with transaction.atomic():
        won = _won(rows, count_new(ScheduleSlot, rows, ["schedule_key", "slot"]))
        calls: dict[tuple[str, str | None], list[tuple[Any, Any]]] = {}
        uuids: dict[tuple[str, str | None], list[uuid.UUID]] = {}
        entries = []
        tasks: dict[str, Any] = {}
        for key, slot, schedule, execution_uuid, text in slots:
            name = schedule.task_name
            task = tasks[name] if name in tasks else tasks.setdefault(name, registry.get(name))
            slot_text = slot_texts.get(slot) or slot_texts.setdefault(slot, slot.isoformat())
            if key not in won:
                report.skipped.append(
                    {"schedule": key, "slot": slot_text, "reason": "already_enqueued"})
            elif task is None:  # the system check reports it; never import by name here
                report.skipped.append(
                    {"schedule": key, "slot": slot_text, "reason": "unknown_task"})
            else:
                # Per task and queue override (a PeriodicTask may name a queue): one spec
                # template each, then one bulk enqueue.
                group_key = (name, getattr(schedule, "queue_name", None) or None)
                calls.setdefault(group_key, []).append((schedule.args, schedule.kwargs))
                uuids.setdefault(group_key, []).append(execution_uuid)
                entries.append({"schedule": key, "slot": slot_text, "execution": text})
        specs = [
            spec for (name, queue_name), group_calls in calls.items()
            for spec in tasks[name].using(queue_name=queue_name).specs(group_calls)
        ]
        lifecycle.enqueue_many(specs, uuids=[u for group_key in calls for u in uuids[group_key]],
                               returning=False)
    for entry in entries:
        report.enqueued.append(entry)
        logger.info("Beat enqueued %s for slot %s", entry["schedule"], entry["slot"])


def release_due(now: datetime) -> int:
    """Publish the delayed executions whose time has come."""
    ids = list(
        TaskExecution.objects.due(now)
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
    # Usually nothing is stuck, and that answer comes from two index-only counts. The planner
    # estimates every queued try as old enough (thousands): joined with the executions it
    # planned the empty answer with parallel workers, and as an EXISTS (LIMIT 1) it scanned
    # the whole table expecting an early match (1.3 s at 10 million tries, bench/scale.py).
    old_queued = TaskExecutionTry.objects.filter(status=TryStatus.QUEUED, not_before__lt=cutoff)
    expired = TaskExecutionTry.objects.filter(status=TryStatus.RUNNING,
                                              lease_expires_at__lt=cutoff)
    if not old_queued.count() and not expired.count():
        return 0
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
