"""The beat end to end: lost-message recovery through the emulator, concurrent calls over real
HTTP, and fresh processes racing on one state table (PostgreSQL)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_i3tasks import beat, transport
from django_i3tasks.beat import run_beat
from django_i3tasks.execution import run_message
from django_i3tasks.models import (
    ExecutionStatus,
    ScheduleSlot,
    ScheduleState,
    TaskExecution,
    TaskExecutionTry,
    TryStatus,
)
from django_i3tasks.types import Schedule
from tests.helpers import (
    HOURLY,
    MINUTELY,
    at,
    executions,
    http,
    pull_all,
    start_and_join,
    this_minute,
    wait_for,
)
from tests.testapp import tasks
from tests.testapp.beat_tasks import tick


@pytest.mark.django_db(transaction=True)
def test_lost_publish_runs_once_after_the_recovery_window(push_queue, monkeypatch, i3settings):
    real_publish = transport.publish_many

    def lost(messages, timeout):
        raise ConnectionError("simulated publish failure after commit")

    monkeypatch.setattr(transport, "publish_many", lost)
    handle = tick.delay("lost")
    monkeypatch.setattr(transport, "publish_many", real_publish)
    window = 600
    i3settings(recovery_after_seconds=window)
    assert run_beat(now=timezone.now() + timedelta(seconds=window - 30)).republished == 0
    assert run_beat(now=timezone.now() + timedelta(seconds=window + 5)).republished == 1
    transport.flush()
    wait_for(lambda: TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.SUCCESS)
    # A later beat finds nothing to recover; the try ran once.
    assert run_beat(now=timezone.now() + timedelta(seconds=3 * window)).republished == 0
    task_try = TaskExecutionTry.objects.get(execution_id=handle.id)
    assert task_try.claims == 1 and task_try.status == TryStatus.SUCCESS
    assert task_try.republished_at is not None
    assert tasks.CALLS["tick:lost"] == 1


@pytest.mark.django_db(transaction=True)
def test_20_concurrent_calls_for_one_minute_enqueue_each_schedule_once(
    pull_queue, live_server, i3settings
):
    other = Schedule("tests.testapp.beat_tasks", "tick", "*/5 * * * *", ["five"])
    i3settings(schedules=(MINUTELY, HOURLY, other))
    url = f"{live_server.url}/i3/tasks-beat/"
    headers = {"X-CloudScheduler-ScheduleTime": this_minute()[0]}
    answers = []
    barrier = threading.Barrier(20)

    def call():
        barrier.wait()
        answers.append(http("POST", url, b"", headers))

    threads = [threading.Thread(target=call) for _ in range(20)]
    start_and_join(threads)
    assert [code for code, _, _ in answers] == [200] * 20, answers
    enqueued = [e for _, _, body in answers for e in json.loads(body)["enqueued"]]
    assert sorted(e["schedule"] for e in enqueued) == sorted([MINUTELY.key, HOURLY.key,
                                                              other.key])
    for tag in ("minutely", "hourly", "five"):
        assert executions(tag) == 1
    # What reached Pub/Sub: exactly one message per schedule; running them: one effect each.
    messages = pull_all()
    assert sorted(m.args[0] for m in messages) == ["five", "hourly", "minutely"]
    for message in messages:
        run_message(message)
    assert [tasks.CALLS[f"tick:{t}"] for t in ("minutely", "hourly", "five")] == [1, 1, 1]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrency is proven on "
                    "PostgreSQL (SQLite serialises writers)")
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_calls_of_fresh_processes_fire_each_slot_once(
    i3settings, no_publish
):
    """Eight processes start at once on an empty state table: their syncs insert the same
    rows, their calls select the same due rows and advance them; each slot runs once."""
    from django.db import connections

    schedules = tuple(
        Schedule("tests.testapp.beat_tasks", "tick", cron, [f"race-{i}"], name=f"race-{i}")
        for i, cron in enumerate(["* * * * *", "0 * * * *", "*/5 * * * *", "30 3 * * *"] * 5)
    )
    i3settings(schedules=schedules)
    beat.forget(keep_state=True)  # no rebuild: every thread syncs into the empty table
    barrier = threading.Barrier(8)
    reports, errors = [], []

    def fresh_process(minute: str) -> None:
        try:
            barrier.wait()
            with beat._book_lock:  # each thread plays a process of its own
                book = beat._sync(schedules, rebuild=False)
            assert set(book) == {s.key for s in schedules}
            barrier.wait()
            reports.append(run_beat(at(minute)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fresh_process, args=("2026-11-23T12:00:00",))
               for _ in range(8)]
    start_and_join(threads)
    assert errors == []
    enqueued = sorted(e["schedule"] for r in reports for e in r.enqueued)
    assert enqueued == sorted(s.key for s in schedules if s.cron != "30 3 * * *")
    assert ScheduleState.objects.count() == len(schedules)
    assert ScheduleSlot.objects.count() == len(enqueued)
    assert set(ScheduleState.objects.filter(key__in=enqueued).values_list(
        "last_slot", flat=True)) == {at("2026-11-23T12:00:00")}
    assert len(no_publish) == len(enqueued)
