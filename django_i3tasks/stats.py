"""Figures over executions and tries in a time window: what ``manage.py i3tasks stats`` and
the admin dashboard show. Each function is one grouped query (percentiles are computed by
PostgreSQL, from histograms for the dashboard; on other databases from the window's
durations in Python).

Durations are a try's ``finished_at - started_at``; the queue delay is ``started_at -
not_before`` (from when the try was due, after any backoff or countdown, to its start).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Count, Min

from . import queries
from .models import OPEN_STATUSES, ExecutionStatus, TaskExecution, TaskExecutionTry


def _connection() -> Any:
    return connections[router.db_for_read(TaskExecutionTry)]


@contextmanager
def _window_statement(connection: Any) -> Iterator[Any]:
    """A cursor in a transaction set up for one statement over a window of tries: no JIT
    (``queries.try_task`` makes the planner's estimate large enough to compile), and the
    memory to hash the groupings. The planner expects about as many groups as rows (it
    cannot know that minutes and bins repeat), and hashes all three groupings only when that
    estimate fits: at 64 MB it sorted a 346,000-row window into what were 647 groups (180 ms
    of 550, at 10 million executions). The limit is not what is used (37 MB there); a hash
    over it spills to disk. Inside a caller's transaction the settings are put back after."""
    outer = connection.in_atomic_block
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('work_mem'), current_setting('jit'), "
                       "set_config('work_mem', '256MB', true), set_config('jit', 'off', true)")
        work_mem, jit = cursor.fetchone()[:2]
        yield cursor
        if outer:
            cursor.execute("SELECT set_config('work_mem', %s, true), set_config('jit', %s, true)",
                           [work_mem, jit])


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's ``percentile_cont``)."""
    if not values:
        return None
    return _interpolated(len(values), fraction, sorted(values).__getitem__)


def _interpolated(count: int, fraction: float, value_at: Callable[[int], float]) -> float:
    """``percentile_cont`` over ``count`` ordered values, ``value_at(rank)`` (0-based) each."""
    position = (count - 1) * fraction
    low, high = value_at(math.floor(position)), value_at(math.ceil(position))
    return low + (high - low) * (position - math.floor(position))


def status_counts(since: datetime) -> dict[str, dict[str, int]]:
    """Executions created since ``since``: ``{task: {status: count}}``."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for task, status, n in (TaskExecution.objects.filter(created_at__gte=since).order_by()
                            .values_list("task_name", "status").annotate(n=Count("pk"))):
        counts[task][status] = n
    return dict(counts)


def timings(since: datetime) -> dict[str, dict[str, float | int | None]]:
    """Tries finished since ``since``, per task: ``tries``, ``p50_duration``,
    ``p95_duration``, ``p50_delay``, ``p95_delay`` (seconds)."""
    connection = _connection()
    result: dict[str, dict[str, float | int | None]] = {}
    if connection.vendor == "postgresql":
        sql = queries.try_timings(connection)
        with _window_statement(connection) as cursor:
            cursor.execute(sql, [since])
            for task, n, durations, delays in cursor.fetchall():
                result[task] = {"tries": n, "p50_duration": durations[0],
                                "p95_duration": durations[1], "p50_delay": delays[0],
                                "p95_delay": delays[1]}
        return result
    samples: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for task, started, finished, due in TaskExecutionTry.objects.filter(
        finished_at__gte=since, started_at__isnull=False
    ).values_list("execution__task_name", "started_at", "finished_at", "not_before"):
        durations, delays = samples[task]
        durations.append((finished - started).total_seconds())
        delays.append(max((started - due).total_seconds(), 0.0))
    for task, (durations, delays) in samples.items():
        result[task] = {"tries": len(durations),
                        "p50_duration": percentile(durations, 0.5),
                        "p95_duration": percentile(durations, 0.95),
                        "p50_delay": percentile(delays, 0.5),
                        "p95_delay": percentile(delays, 0.95)}
    return result


def open_executions() -> tuple[list[tuple[str, str, int]], dict[str, datetime]]:
    """Open executions now, in one grouped query: ``[(status, queue, count)]`` and, per queue,
    the creation time of the oldest pending one."""
    rows = list(TaskExecution.objects.filter(status__in=OPEN_STATUSES).order_by()
                .values_list("status", "queue_name")
                .annotate(n=Count("pk"), oldest=Min("created_at")))
    counts = [(status, queue, n) for status, queue, n, _ in rows]
    oldest = {queue: first for status, queue, _, first in rows
              if status == ExecutionStatus.PENDING and first is not None}
    return counts, oldest


def stats(since: datetime) -> list[dict[str, Any]]:
    """Per task: counts by status, failure rate (failed / finished), p50/p95 duration and
    queue delay, for executions created and tries finished since ``since``."""
    counts = status_counts(since)
    times = timings(since)
    rows = []
    for task in sorted(set(counts) | set(times)):
        by_status = counts.get(task, {})
        finished = sum(by_status.get(s, 0) for s in ("success", "failed"))
        rows.append({
            "task": task, "counts": by_status, "total": sum(by_status.values()),
            "failure_rate": (by_status.get("failed", 0) / finished) if finished else None,
            **times.get(task, {"tries": 0, "p50_duration": None, "p95_duration": None,
                               "p50_delay": None, "p95_delay": None}),
        })
    return rows


def finished_tries(since: datetime, by_hour: bool = False,
                   per_task: bool = False) -> list[tuple[Any, ...]]:
    """Tries finished since ``since`` per minute (or hour) and status (or task):
    ``[(bucket, status or task, count)]``, one grouped query."""
    from django.db.models.functions import TruncHour, TruncMinute

    bucket = (TruncHour if by_hour else TruncMinute)("finished_at")
    key = "execution__task_name" if per_task else "status"
    return list(TaskExecutionTry.objects.filter(finished_at__gte=since).order_by()
                .annotate(bucket=bucket).values_list("bucket", key)
                .annotate(n=Count("pk")))


def window_tries(since: datetime, by_hour: bool) -> dict[str, Any]:
    """The dashboard's try figures in one pass over the window of tries on PostgreSQL:
    ``outcomes`` ``[(bucket, status, n)]``, ``per_task``
    ``[(bucket, task, n)]`` (buckets are whole UTC minutes or hours, as the dashboard's
    points) and ``timings`` as ``timings()``, whose percentiles come from
    histograms there: within a bin (5 %) of the exact value (``i3tasks stats`` gives exact ones).
    Elsewhere: three queries, exact percentiles."""
    connection = _connection()
    if connection.vendor != "postgresql":
        return {"outcomes": finished_tries(since, by_hour),
                "per_task": finished_tries(since, by_hour, per_task=True),
                "timings": timings(since)}
    step = 3600 if by_hour else 60
    result: dict[str, Any] = {"outcomes": [], "per_task": [], "timings": {}}
    runs: dict[str, dict[int, int]] = defaultdict(dict)
    delays: dict[str, dict[int, int]] = defaultdict(dict)
    with _window_statement(connection) as cursor:
        cursor.execute(queries.window_tries(connection), [step, since])
        rows = cursor.fetchall()
    outcomes: dict[tuple[int, str], int] = defaultdict(int)
    per_task: dict[tuple[int, str], int] = defaultdict(int)
    for grouping, status, bucket, task, run_bin, delay_bin, n in rows:
        if grouping == _BY_BUCKET:
            outcomes[(bucket, status)] += n
            per_task[(bucket, task)] += n
        elif grouping == _RUN_BINS and run_bin is not None:
            runs[task][run_bin] = n
        elif grouping == _DELAY_BINS and delay_bin is not None:
            delays[task][delay_bin] = n

    def moment(bucket: int) -> datetime:
        return datetime.fromtimestamp(bucket * step, dt_timezone.utc)

    result["outcomes"] = [(moment(b), status, n) for (b, status), n in outcomes.items()]
    result["per_task"] = [(moment(b), task, n) for (b, task), n in per_task.items()]
    for task, bins in runs.items():
        result["timings"][task] = {
            "tries": sum(bins.values()),
            "p50_duration": binned_percentile(bins, 0.5),
            "p95_duration": binned_percentile(bins, 0.95),
            "p50_delay": binned_percentile(delays.get(task, {}), 0.5),
            "p95_delay": binned_percentile(delays.get(task, {}), 0.95),
        }
    return result


#: ``GROUPING()`` of ``queries.window_tries``' sets.
_BY_BUCKET, _RUN_BINS, _DELAY_BINS = 3, 25, 26


def binned_percentile(bins: dict[int, int], fraction: float) -> float | None:
    """The percentile of a ``queries.LOG_BINS`` histogram, interpolated between the closest
    ranks as ``percentile_cont`` does; each rank stands at the middle of its bin (0.5 ms for
    the bin under 1 ms)."""
    total = sum(bins.values())
    if not total:
        return None
    ordered = sorted(bins)

    def at(rank: int) -> float:  # the value of the 0-based ``rank``
        seen = 0
        for index in ordered:
            seen += bins[index]
            if seen > rank:
                break
        return 0.0005 if index < 0 else 0.001 * math.exp((index + 0.5) / queries.LOG_BINS)

    return _interpolated(total, fraction, at)
