"""Every hot statement reads the executions and tries tables through an index (PostgreSQL).

How the plans are made meaningful on a small test database: the statements are captured
(with their parameters, by an execute wrapper) while the real operations run, then each is
``EXPLAIN``ed with ``enable_seqscan = off``. That setting does not forbid a sequential scan,
it only makes it cost-prohibitive, so the planner still chooses one when *no index can serve
the condition*, which is the defect the test looks for: on a table of tens of millions of
rows that plan reads the whole table. An index scan without an index condition (walking an
entire index) is flagged too, unless a ``Limit`` above it stops it early (a newest-first page).
The table statistics come from a few thousand generated rows (``ANALYZE``), so estimates are
not those of empty tables. ``bench/scale.py`` measures the same operations on 10 million rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_i3tasks import beat, maintenance
from django_i3tasks.types import Schedule
from tests.helpers import message_of, push_envelope
from tests.testapp import tasks

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.TEST_DB != "postgres", reason="PostgreSQL plans"),
]

TABLES = ("django_i3tasks_taskexecution", "django_i3tasks_taskexecutiontry")
DML = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


@contextmanager
def statements() -> Iterator[list[tuple[str, Any]]]:
    """The data statements run inside the block, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: Any) -> Any:
        if not many and sql.lstrip().split(None, 1)[0].upper() in DML:
            seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield seen


def full_reads(sql: str, params: Any) -> list[str]:
    """The nodes of the plan that read a whole executions or tries table (or index)."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        finally:
            cursor.execute("RESET enable_seqscan")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    bad: list[str] = []

    def walk(node: dict[str, Any], limited: bool) -> None:
        kind, table = node["Node Type"], node.get("Relation Name", "")
        if table in TABLES:
            if kind == "Seq Scan":
                bad.append(f"Seq Scan on {table}")
            elif kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node \
                    and not limited:
                bad.append(f"full {kind} of {node.get('Index Name')} on {table}")
        for child in node.get("Plans", []):
            walk(child, limited or kind == "Limit")

    walk(plan[0]["Plan"], False)
    return bad


def assert_indexed(captured: list[tuple[str, Any]]) -> None:
    assert captured, "no statement captured"
    failures = []
    for sql, params in captured:
        if not any(table in sql for table in TABLES):
            continue
        bad = full_reads(sql, params)
        if bad:
            failures.append(f"{bad}: {sql[:400]}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def history() -> None:
    """A few thousand finished executions with tries, analysed: estimates of a used table."""
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO django_i3tasks_taskexecution (uuid, task_name, queue_name, args,
              kwargs, status, max_retries, created_at, finished_at, has_next, unique_key)
            SELECT gen_random_uuid(), 'tests.testapp.tasks.add', 'default', '[]', '{}',
                   CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'success' END, 3,
                   now() - interval '1 minute' * g, now() - interval '1 minute' * g, false, ''
            FROM generate_series(1, 5000) g""")
        cursor.execute("""
            INSERT INTO django_i3tasks_taskexecutiontry (execution_id, number, status,
              enqueued_at, not_before, started_at, finished_at, claims, error_type,
              error_message, traceback)
            SELECT id, 1, status, created_at, created_at, created_at, finished_at, 1, '', '', ''
            FROM django_i3tasks_taskexecution""")
        cursor.execute("ANALYZE django_i3tasks_taskexecution")
        cursor.execute("ANALYZE django_i3tasks_taskexecutiontry")


def test_delay_and_push_use_indexes(history, no_publish, client):
    with statements() as captured:
        handle = tasks.add.delay(1, 2)
        data, attributes = message_of(handle).encode()
        response = client.post("/i3/tasks-push/", push_envelope(data, attributes),
                               content_type="application/json")
    assert response.status_code == 200 and response.json()["status"] == "success"
    assert_indexed(captured)


def test_beat_sweep_health_and_status_use_indexes(history, no_publish, client, i3settings):
    schedules = tuple(Schedule("tests.testapp.beat_tasks", "tick", cron, [i], name=f"p{i}")
                      for i, cron in enumerate(["* * * * *", "0 * * * *", "*/5 * * * *"]))
    i3settings(schedules=schedules)
    beat.forget()
    stuck = tasks.add.delay(5, 5)
    running = tasks.add.delay(6, 6)
    # Beyond the push queue's hold limit, so it is written scheduled for the beat; then due.
    later = tasks.add.using(countdown=3600).delay(7, 7)
    from django_i3tasks.models import TaskExecution

    TaskExecution.objects.filter(pk=later.id).update(eta=timezone.now())
    from django_i3tasks.models import TaskExecutionTry

    TaskExecutionTry.objects.filter(execution_id=stuck.id).update(
        not_before=timezone.now() - timedelta(hours=1))
    TaskExecutionTry.objects.filter(execution_id=running.id).update(
        status="running", lease_expires_at=timezone.now() - timedelta(hours=1))
    with statements() as captured:
        report = beat.run_beat(now=timezone.now() + timedelta(seconds=5))
        assert report.enqueued and report.released == 1 and report.republished == 2
        assert client.get("/i3/tasks-health/").status_code == 503  # the stuck tries
        assert client.get(f"/i3/tasks-status/{stuck.uuid}/").status_code == 200
    assert_indexed(captured)


def test_admin_list_pages_use_indexes(history, admin_client):
    day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    pages = ({}, {"status__exact": "failed"}, {"task_name": "tests.testapp.tasks.add"},
             {"created_at__gte": str(day - timedelta(days=1)), "created_at__lt": str(day)})
    for query in pages:
        with statements() as captured:
            response = admin_client.get("/admin/django_i3tasks/taskexecution/", query)
        assert response.status_code == 200
        # The page's rows (counts are exact only below an estimate of EXACT_BELOW rows).
        assert_indexed([(sql, p) for sql, p in captured if "LIMIT" in sql])


def test_admin_count_above_the_threshold_is_the_planner_estimate(history, admin_client,
                                                                  monkeypatch):
    from django_i3tasks import adminlists
    from django_i3tasks.models import TaskExecution

    url = "/admin/django_i3tasks/taskexecution/"
    exact = admin_client.get(url).context["cl"].result_count
    assert exact == TaskExecution.objects.count() == 5000
    monkeypatch.setattr(adminlists, "EXACT_BELOW", 1000)
    with statements() as captured:
        shown = admin_client.get(url).context["cl"].result_count
    assert shown == adminlists.estimated_count(TaskExecution.objects.all())
    assert 4000 <= shown <= 6000
    assert not any(sql.startswith("SELECT COUNT(") for sql, _ in captured)


def test_dashboard_stats_and_metrics_use_indexes(history, admin_client, i3settings):
    """The windows of finished tries ("the last hour", ``--since``) read an index range: at
    30 days of history a scan of every try kept is what made them slow."""
    i3settings(status_token="plan-token")
    with statements() as captured:
        for window in ("1h", "24h"):
            response = admin_client.get("/admin/django_i3tasks/dashboard/", {"window": window})
            assert response.status_code == 200
        call_command("i3tasks", "stats", "--since", "1h", "--json", stdout=io.StringIO())
        assert admin_client.get("/i3/tasks-metrics/",
                                HTTP_X_I3TASKS_TOKEN="plan-token").status_code in (200, 501)
    assert_indexed(captured)


def test_clean_batches_use_indexes(history):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_i3tasks_taskexecution SET finished_at = now() - "
                       "interval '40 days' WHERE id IN (SELECT id FROM "
                       "django_i3tasks_taskexecution ORDER BY id LIMIT 300)")
    with statements() as captured:
        assert maintenance.clean(30, batch_size=100) == 300
    assert_indexed(captured)


def test_a_missing_index_is_caught(history):
    """The check itself fails when no index serves a condition (the test can fail)."""
    sql = ("SELECT id FROM django_i3tasks_taskexecutiontry WHERE error_message = %s")
    assert full_reads(sql, ["x"]) == ["Seq Scan on django_i3tasks_taskexecutiontry"]


def test_nothing_stuck_is_read_without_a_join_or_a_limit(history, no_publish, client):
    """The usual answer of the sweep and of health, "nothing stuck", comes from counts of the
    tries table alone. The planner estimates thousands of old queued tries: with a join it
    planned that empty answer with parallel workers, and as ``EXISTS``/``LIMIT 1`` it chose to
    scan the table for an early match (1.3 s at 10 million tries, ``bench/scale.py``)."""
    tasks.add.delay(1, 1)  # a queued try, recent: not stuck
    with statements() as captured:
        assert beat.recover_lost(timezone.now()) == 0
        assert client.get("/i3/tasks-health/").status_code == 200
    on_tries = [sql for sql, _ in captured if "django_i3tasks_taskexecutiontry" in sql]
    assert len(on_tries) == 4  # sweep: queued, expired; health: queued, expired
    for sql in on_tries:
        assert sql.startswith("SELECT COUNT(*)"), sql
        assert "JOIN" not in sql and "LIMIT" not in sql, sql
    assert_indexed(captured)
