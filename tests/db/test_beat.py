"""The beat: schedules fire once per slot, delayed tasks, lost-message recovery."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_i3tasks import beat
from django_i3tasks.beat import run_beat
from django_i3tasks.execution import run_message
from django_i3tasks.models import (
    ExecutionStatus,
    ScheduleSlot,
    ScheduleState,
    TaskExecution,
    TaskExecutionTry,
)
from django_i3tasks.types import Schedule
from tests.helpers import DAILY, HOURLY, MINUTELY, at, executions, this_minute
from tests.testapp import tasks
from tests.testapp.beat_tasks import tick

# -- slots -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the process cache is filled after commit
def test_each_slot_fires_once_and_catch_up_fires_the_latest_missed_slot_once(
    i3settings, no_publish
):
    i3settings(schedules=(MINUTELY, HOURLY, DAILY))
    report = run_beat(at("2026-11-23T11:59:00"))
    # The hourly 11:00 slot is within beat_catch_up_seconds (an hour): it runs late, once.
    assert sorted(e["schedule"] for e in report.enqueued) == sorted([HOURLY.key, MINUTELY.key])
    assert run_beat(at("2026-11-23T11:59:40")).enqueued == []  # same minute: nothing new
    # The scheduler is silent from 12:00 to 12:09; one call at 12:10.
    report = run_beat(at("2026-11-23T12:10:00"))
    assert sorted((e["schedule"], e["slot"]) for e in report.enqueued) == sorted([
        (HOURLY.key, "2026-11-23T12:00:00+00:00"),
        (MINUTELY.key, "2026-11-23T12:10:00+00:00"),
    ])
    assert executions("minutely") == 2 and executions("hourly") == 2
    assert executions("daily") == 0  # its slot (03:30) is older than beat_catch_up_seconds
    report = run_beat(at("2026-11-23T12:11:00"))
    assert [e["schedule"] for e in report.enqueued] == [MINUTELY.key]
    assert report.unchanged == 1  # this process knows the hourly slot is done
    beat.forget()  # another instance, which knows nothing: the slot rows refuse both
    report = run_beat(at("2026-11-23T12:11:30"))
    assert report.enqueued == []
    assert sorted(s["schedule"] for s in report.skipped) == sorted([HOURLY.key, MINUTELY.key])
    assert {s["reason"] for s in report.skipped} == {"already_enqueued"}
    assert executions("hourly") == 2 and executions("minutely") == 3
    slot = ScheduleSlot.objects.get(schedule_key=HOURLY.key, slot=at("2026-11-23T12:00:00"))
    execution = TaskExecution.objects.get(uuid=slot.execution_uuid)
    assert execution.task_name == tick.name and execution.args == ["hourly"]
    assert len(no_publish) == 5


@pytest.mark.django_db
def test_a_slot_another_call_inserted_is_skipped_and_the_others_fire(i3settings, no_publish):
    """Some of the minute's slot rows exist already (another beat call won them): this call
    enqueues only the slots it inserted, and tells which rows were the other call's."""
    i3settings(schedules=(MINUTELY, HOURLY))
    theirs = ScheduleSlot.objects.create(
        schedule_key=HOURLY.key, slot=at("2026-11-23T12:00:00"), execution_uuid=uuid.uuid4()
    )
    report = run_beat(at("2026-11-23T12:00:10"))
    assert [(e["schedule"], e["slot"]) for e in report.enqueued] == [
        (MINUTELY.key, "2026-11-23T12:00:00+00:00")]
    assert [(s["schedule"], s["reason"]) for s in report.skipped] == [
        (HOURLY.key, "already_enqueued")]
    assert executions("minutely") == 1 and executions("hourly") == 0
    assert ScheduleSlot.objects.get(pk=theirs.pk).execution_uuid == theirs.execution_uuid
    assert len(no_publish) == 1


@pytest.mark.django_db
def test_force_sync_beat_runs_the_due_tasks_inline(i3settings):
    i3settings(schedules=(MINUTELY,), force_sync=True)
    run_beat(at("2026-11-23T12:00:00"))
    assert tasks.CALLS["tick:minutely"] == 1


# -- delayed tasks -------------------------------------------------------------------------


@pytest.mark.django_db
def test_countdown_task_is_released_by_the_first_beat_after_it_is_due(no_publish):
    handle = tick.apply_async(args=["later"], countdown=90)
    start = timezone.now()
    assert handle.task_execution.status == ExecutionStatus.SCHEDULED and no_publish == []
    assert TaskExecutionTry.objects.filter(execution_id=handle.id).count() == 0
    assert run_beat(now=start + timedelta(seconds=30)).released == 0
    assert no_publish == []
    assert run_beat(now=start + timedelta(minutes=2)).released == 1
    assert run_beat(now=start + timedelta(minutes=3)).released == 0
    (message,) = no_publish
    assert message.execution_id == handle.id and message.try_number == 1
    run_message(message)
    assert tasks.CALLS["tick:later"] == 1


@pytest.mark.django_db
def test_eta_must_be_aware_and_exclusive_with_countdown():
    with pytest.raises(ValueError, match="aware"):
        tick.apply_async(args=["x"], eta=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="countdown or eta"):
        tick.apply_async(args=["x"], countdown=1, eta=timezone.now())


# -- lost-message recovery -----------------------------------------------------------------


@pytest.mark.django_db
def test_republishing_a_try_that_was_not_lost_runs_it_once(no_publish, i3settings):
    """The original message was only slow: both copies arrive; the claim runs it once."""
    handle = tick.delay("slow-message")
    i3settings(recovery_after_seconds=60)
    assert run_beat(now=timezone.now() + timedelta(seconds=61)).republished == 1
    original, copy = no_publish
    assert copy.try_id == original.try_id
    run_message(copy)
    run_message(original)
    assert tasks.CALLS["tick:slow-message"] == 1
    assert TaskExecution.objects.get(pk=handle.id).status == ExecutionStatus.SUCCESS


# -- the endpoint --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_beat_endpoint_answers_json(client, i3settings, no_publish):
    i3settings(schedules=(MINUTELY,))
    header, slot = this_minute()
    response = client.post("/i3/tasks-beat/", HTTP_X_CLOUDSCHEDULER_SCHEDULETIME=header)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["slot_time"] == slot
    assert [(e["schedule"], e["slot"]) for e in body["enqueued"]] == [(MINUTELY.key, slot)]
    again = client.post("/i3/tasks-beat/", HTTP_X_CLOUDSCHEDULER_SCHEDULETIME=header).json()
    assert again["enqueued"] == [] and again["unchanged"] == 1
    beat.forget()
    again = client.post("/i3/tasks-beat/", HTTP_X_CLOUDSCHEDULER_SCHEDULETIME=header).json()
    assert again["enqueued"] == [] and again["skipped"][0]["reason"] == "already_enqueued"
    bad = client.post("/i3/tasks-beat/", HTTP_X_CLOUDSCHEDULER_SCHEDULETIME="noon")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_schedule_time"
    assert client.get("/i3/tasks-beat/").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 401), ({"HTTP_X_I3TASKS_BEAT_TOKEN": "wrong"}, 403)],
)
def test_beat_with_a_bad_or_missing_credential_enqueues_nothing(
    client, i3settings, no_publish, headers, code
):
    i3settings(schedules=(MINUTELY,), beat_token="s3cret-beat-token")
    response = client.post("/i3/tasks-beat/?token=s3cret-beat-token", **headers)
    assert response.status_code == code and response.json()["status"] == "error"
    assert ScheduleSlot.objects.count() == 0 and TaskExecution.objects.count() == 0
    ok = client.post("/i3/tasks-beat/", HTTP_X_I3TASKS_BEAT_TOKEN="s3cret-beat-token")
    assert ok.status_code == 200 and ScheduleSlot.objects.count() == 1


@pytest.mark.django_db
def test_beat_command_once(i3settings, no_publish, capsys):
    i3settings(schedules=(MINUTELY,))
    call_command("i3tasks_beat", "--once")
    out = capsys.readouterr().out
    assert "enqueued 1" in out and MINUTELY.key in out
    assert executions("minutely") == 1


# -- schedule state: a call evaluates what is due, not every schedule ----------------------


def state(key: str) -> ScheduleState:
    return ScheduleState.objects.get(key=key)


def count_windows(monkeypatch) -> list[str]:
    """Record every cron evaluation (croniter) the beat makes."""
    seen: list[str] = []
    real = beat._slot_window

    def window(cron, tz_name, minute):
        seen.append(cron)
        return real(cron, tz_name, minute)

    monkeypatch.setattr(beat, "_slot_window", window)
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_new_process_evaluates_only_the_due_schedules(i3settings, no_publish, monkeypatch):
    daily = [Schedule("tests.testapp.beat_tasks", "tick", f"{m} 5 * * *", [f"d{m}"])
             for m in range(30)]
    i3settings(schedules=(MINUTELY, HOURLY, *daily))
    run_beat(at("2026-11-23T12:00:00"))
    assert state(HOURLY.key).next_fire == at("2026-11-23T13:00:00")
    assert state(HOURLY.key).last_slot == at("2026-11-23T12:00:00")
    assert state(daily[0].key).next_fire == at("2026-11-24T05:00:00")  # given up, not fired
    assert state(daily[0].key).last_slot is None
    beat.forget(keep_state=True)  # a restarted process: empty caches, the table stays
    seen = count_windows(monkeypatch)
    report = run_beat(at("2026-11-23T12:01:00"))
    assert seen == [MINUTELY.cron]  # no other cron expression is parsed
    assert [e["schedule"] for e in report.enqueued] == [MINUTELY.key]
    assert report.skipped == [] and report.unchanged == 1  # the hourly slot is done
    assert len(no_publish) == 3


@pytest.mark.django_db(transaction=True)
def test_queries_per_call_do_not_grow_with_schedules_that_are_not_due(
    i3settings, no_publish
):
    from django.test.utils import CaptureQueriesContext

    def steady_queries(schedules: int, hour: int) -> int:
        daily = tuple(Schedule("tests.testapp.beat_tasks", "tick", f"{i % 60} 5 * * *", [i],
                               name=f"daily-{schedules}-{i}") for i in range(schedules))
        i3settings(schedules=(MINUTELY, *daily))
        run_beat(at(f"2026-11-23T{hour}:00:00"))
        with CaptureQueriesContext(connection) as captured:
            report = run_beat(at(f"2026-11-23T{hour}:01:00"))
        assert [e["schedule"] for e in report.enqueued] == [MINUTELY.key]
        return len(captured.captured_queries)

    assert steady_queries(10, 12) == steady_queries(500, 13)


@pytest.mark.django_db(transaction=True)
def test_changed_added_and_removed_schedules_are_picked_up(i3settings, no_publish):
    report_v1 = Schedule("tests.testapp.beat_tasks", "tick", "0 * * * *", ["v1"], name="report")
    i3settings(schedules=(report_v1, MINUTELY))
    assert {e["schedule"] for e in run_beat(at("2026-11-23T12:00:00")).enqueued} == {
        "report", MINUTELY.key}
    # Same name, new cron: the new expression's latest slot (12:30) runs at the next call.
    report_v2 = Schedule("tests.testapp.beat_tasks", "tick", "30 * * * *", ["v2"],
                         name="report")
    i3settings(schedules=(report_v2, DAILY))  # MINUTELY removed, DAILY added
    enqueued = run_beat(at("2026-11-23T12:31:00")).enqueued
    assert [(e["schedule"], e["slot"]) for e in enqueued] == [
        ("report", "2026-11-23T12:30:00+00:00")]
    assert state("report").spec == "UTC 30 * * * *"
    assert not ScheduleState.objects.filter(key=MINUTELY.key).exists()
    assert state(DAILY.key).next_fire == at("2026-11-24T03:30:00")
    assert executions("v2") == 1 and executions("minutely") == 1


@pytest.mark.django_db(transaction=True)
def test_a_late_call_never_moves_a_schedule_back_and_lost_rows_come_back(
    i3settings, no_publish
):
    i3settings(schedules=(MINUTELY, HOURLY))
    run_beat(at("2026-11-23T12:05:00"))
    late = run_beat(at("2026-11-23T12:03:00"))  # a retried call for an earlier minute
    assert late.enqueued == [] and late.skipped == []
    assert state(MINUTELY.key).next_fire == at("2026-11-23T12:06:00")
    ScheduleState.objects.all().delete()  # e.g. by hand: the next call rebuilds the rows
    report = run_beat(at("2026-11-23T12:05:30"))
    assert report.enqueued == []
    assert sorted(s["schedule"] for s in report.skipped) == sorted([MINUTELY.key, HOURLY.key])
    assert ScheduleState.objects.count() == 2
    assert executions("minutely") == 1 and executions("hourly") == 1
