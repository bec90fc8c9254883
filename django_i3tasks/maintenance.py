"""Operations: a health report for uptime checks, and the retention clean-up."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import outbox, queries
from .conf import get_settings
from .models import (
    FINISHED_STATUSES,
    ExecutionStatus,
    ScheduleSlot,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TryStatus,
)

#: Terminal statuses: only these are removed by ``clean``.
FINISHED = FINISHED_STATUSES
#: Executions deleted per clean-up batch (with their tries and results): one short
#: transaction each. Most of a batch's time is PostgreSQL's foreign-key checks, one per
#: deleted row and key (``ON DELETE RESTRICT`` since migration 0014: at the end of the batch's
#: statement); 5,000 a batch keeps that statement well under 1 s (``bench/scale.py`` prints
#: the longest statement). SQLite batches are capped by its 999 parameters.
CLEAN_BATCH = 5_000


@dataclass(frozen=True)
class Health:
    #: Tries queued and due for longer than ``recovery_after_seconds`` (never started).
    stuck_queued: int
    #: Tries running past their lease (their worker is presumably gone).
    stuck_running: int
    #: Executions that failed for good in the last hour.
    failed_last_hour: int
    #: Publishes of this process that Pub/Sub did not confirm in the last hour (their tries
    #: stay queued; the beat's recovery sweep publishes them again). Reported, but not counted
    #: as unhealthy: restarting this instance would not make Pub/Sub reachable.
    publish_failed_last_hour: int = 0
    #: Executions parked by a ``concurrency_limit``/``rate_limit``, by reason
    #: (``concurrency:KEY``, ``rate:KEY``). Waiting for a slot is not unhealthy.
    parked: dict[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.stuck_queued == 0 and self.stuck_running == 0

    def as_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


def health_report() -> Health:
    """Counts, each read from an index. The stuck tries are counted without a join first:
    nearly always there are none, and the planner cannot know that (it estimates every queued
    try as old enough), so a join here was planned for thousands of rows, with parallel
    workers, at tens of millions of rows (``bench/scale.py``)."""
    now = timezone.now()
    window = timedelta(seconds=get_settings().recovery_after_seconds)
    queued = TaskExecutionTry.objects.filter(status=TryStatus.QUEUED, not_before__lt=now - window)
    stuck_queued = queued.count()
    if stuck_queued:  # a parked (waiting) execution keeps its queued try: it is not stuck
        parked = queued.filter(execution__status=ExecutionStatus.WAITING).count()
        stuck_queued = max(0, stuck_queued - parked)  # two moments: never below zero
    return Health(
        stuck_queued=stuck_queued,
        stuck_running=TaskExecutionTry.objects.filter(
            status=TryStatus.RUNNING, lease_expires_at__lt=now
        ).count(),
        failed_last_hour=TaskExecution.objects.filter(
            status=ExecutionStatus.FAILED, finished_at__gte=now - timedelta(hours=1)
        ).count(),
        publish_failed_last_hour=outbox.recent_failures(3600),
        parked=dict(
            TaskExecution.objects.filter(status=ExecutionStatus.WAITING)
            .exclude(wait_reason="").values("wait_reason").annotate(n=Count("pk"))
            .values_list("wait_reason", "n")
        ),
    )


def clean(older_than_days: int | None = None, *, dry_run: bool = False,
          batch_size: int = CLEAN_BATCH) -> int:
    """Delete finished executions (with their tries and results) older than the retention
    window; returns how many executions. Pending work and group callbacks are never deleted.

    In batches of ``batch_size`` executions, each one short transaction: a table of tens of
    millions of rows is cleaned without a long lock or a statement that stalls the hot path.
    Each batch is found on the ``(status, finished_at)`` index, oldest first, from where the
    previous batch stopped (so no batch walks past the index entries of deleted rows).
    """
    days = older_than_days if older_than_days is not None else get_settings().retention_days
    cutoff = timezone.now() - timedelta(days=days)
    if dry_run:
        return TaskExecution.objects.filter(status__in=FINISHED).filter(
            Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
        ).count()
    # Beat slots only matter while they are within the catch-up window; keep them longer.
    slot_cutoff = min(cutoff, timezone.now() - timedelta(
        seconds=get_settings().beat_catch_up_seconds, days=1))
    ScheduleSlot.objects.filter(slot__lt=slot_cutoff).delete()
    connection = connections[router.db_for_write(TaskExecution)]
    limit = connection.features.max_query_params  # SQLite: 999 parameters per statement
    size = max(1, min(batch_size, limit - 10) if limit else batch_size)
    deleted = 0
    for status in FINISHED:
        since = None  # keyset: the finished_at where the previous batch stopped
        while True:
            rows = TaskExecution.objects.filter(status=status, finished_at__lt=cutoff)
            if since is not None:
                rows = rows.filter(finished_at__gte=since)
            batch = list(rows.order_by("finished_at").values_list("pk", "finished_at")[:size])
            if batch:
                _delete(connection, [pk for pk, _ in batch])
                deleted += len(batch)
                since = batch[-1][1]
            if len(batch) < size:
                break
        while True:  # finished without a finish time (rows written before it was recorded)
            ids = list(TaskExecution.objects.filter(
                status=status, finished_at__isnull=True, created_at__lt=cutoff,
            ).values_list("pk", flat=True)[:size])
            if ids:
                _delete(connection, ids)
                deleted += len(ids)
            if len(ids) < size:
                break
    return deleted


def vacuum() -> list[str]:
    """PostgreSQL: ``VACUUM (ANALYZE)`` the executions, tries and results tables after a
    clean-up; returns the tables vacuumed (none elsewhere, or inside a transaction, where
    VACUUM cannot run).

    Why: deleted rows leave dead entries at the low end of every id index until VACUUM. The
    planner reads an index's end to cost a join, so after a clean-up of a million executions a
    lookup joined with its result took 8 ms to plan instead of 0.1 ms (``bench/scale.py``),
    and autovacuum's default threshold (a fifth of the table dead) comes only after days of
    daily clean-ups. VACUUM takes no lock that blocks reads or writes."""
    connection = connections[router.db_for_write(TaskExecution)]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return []
    tables = [model._meta.db_table for model in (TaskExecutionResult, TaskExecutionTry,
                                                  TaskExecution)]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(table)}")
    return tables


def _delete(connection: Any, ids: list[int]) -> None:
    """One batch: results, tries, the links to the executions, the executions."""
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for sql, params in queries.delete_executions(connection, ids):
            cursor.execute(sql, params)
