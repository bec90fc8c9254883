"""PeriodicTask: schedules in the database run through the beat's slot claim, once per slot."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.db.models import F
from django.urls import reverse

from django_i3tasks import beat
from django_i3tasks.beat import run_beat
from django_i3tasks.models import PeriodicTask, ScheduleSlot, ScheduleState, TaskExecution
from django_i3tasks.types import Schedule
from tests.helpers import at, start_and_join
from tests.testapp.beat_tasks import tick


def runs(tag: str) -> list[TaskExecution]:
    return list(TaskExecution.objects.filter(task_name=tick.name, args=[tag]))


def periodic(name: str = "every-minute", cron: str = "* * * * *", **fields) -> PeriodicTask:
    fields.setdefault("args", [name])
    fields.setdefault("task_name", tick.name)
    return PeriodicTask.objects.create(name=name, cron=cron, **fields)


@pytest.mark.django_db(transaction=True)
def test_a_row_runs_once_for_two_calls_in_its_minute(no_publish):
    row = periodic()
    first = run_beat(at("2026-11-23T12:00:05"))
    second = run_beat(at("2026-11-23T12:00:40"))
    assert [e["schedule"] for e in first.enqueued] == [row.schedule_key]
    assert second.enqueued == [] and second.unchanged == 1
    beat.forget()  # another instance that knows nothing: the slot row refuses it
    third = run_beat(at("2026-11-23T12:00:50"))
    assert third.enqueued == [] and third.skipped[0]["reason"] == "already_enqueued"
    assert len(runs("every-minute")) == 1 and len(no_publish) == 1
    assert row.last_run_at == at("2026-11-23T12:00:00")
    assert row.next_run_at == at("2026-11-23T12:01:00")
    assert run_beat(at("2026-11-23T12:01:00")).enqueued[0]["schedule"] == row.schedule_key
    assert len(runs("every-minute")) == 2


@pytest.mark.django_db(transaction=True)
def test_a_disabled_row_never_runs(no_publish):
    periodic(enabled=False)
    for minute in ("12:00", "12:01", "12:02"):
        assert run_beat(at(f"2026-11-23T{minute}:00")).enqueued == []
    assert runs("every-minute") == [] and no_publish == []
    assert not ScheduleState.objects.filter(key__startswith="periodic:").exists()


@pytest.mark.django_db(transaction=True)
def test_a_change_takes_effect_at_the_next_call(no_publish):
    row = periodic(args=["before"])
    assert len(run_beat(at("2026-11-23T12:00:00")).enqueued) == 1
    row.args = ["after"]
    row.save()
    assert len(run_beat(at("2026-11-23T12:01:00")).enqueued) == 1
    assert len(runs("before")) == 1 and len(runs("after")) == 1
    row.cron = "0 * * * *"  # hourly now: the 12:00 slot under the new cron already ran
    row.save()
    assert run_beat(at("2026-11-23T12:02:00")).enqueued == []
    assert len(run_beat(at("2026-11-23T13:00:00")).enqueued) == 1
    row.enabled = False
    row.save()
    assert run_beat(at("2026-11-23T14:00:00")).enqueued == []
    # A bulk update that raises the revision is seen too.
    PeriodicTask.objects.filter(pk=row.pk).update(enabled=True, revision=F("revision") + 1)
    assert len(run_beat(at("2026-11-23T15:00:00")).enqueued) == 1
    assert len(runs("after")) == 3


@pytest.mark.django_db(transaction=True)
def test_deleting_a_row_keeps_its_past_executions(no_publish):
    row = periodic()
    run_beat(at("2026-11-23T12:00:00"))
    key = row.schedule_key
    row.delete()
    assert run_beat(at("2026-11-23T12:01:00")).enqueued == []
    assert len(runs("every-minute")) == 1
    assert ScheduleSlot.objects.filter(schedule_key=key).count() == 1
    assert not ScheduleState.objects.filter(key=key).exists()


@pytest.mark.django_db(transaction=True)
def test_rows_run_beside_settings_schedules_on_their_queue(i3settings, no_publish):
    setting = Schedule("tests.testapp.beat_tasks", "tick", "* * * * *", ["from-settings"])
    i3settings(schedules=(setting,))
    row = periodic(queue_name="heavy")
    other = periodic("unknown", task_name="no.such.task")
    report = run_beat(at("2026-11-23T12:00:00"))
    assert sorted(e["schedule"] for e in report.enqueued) == sorted([setting.key,
                                                                    row.schedule_key])
    assert report.skipped == [{"schedule": other.schedule_key,
                               "slot": "2026-11-23T12:00:00+00:00", "reason": "unknown_task"}]
    assert runs("every-minute")[0].queue_name == "heavy"
    assert runs("from-settings")[0].queue_name == "default"


@pytest.mark.django_db(transaction=True)
def test_a_missed_slot_is_caught_up_once(no_publish):
    periodic(cron="*/5 * * * *")
    run_beat(at("2026-11-23T12:00:00"))
    report = run_beat(at("2026-11-23T12:23:00"))  # silent 12:01-12:22
    assert [e["slot"] for e in report.enqueued] == ["2026-11-23T12:20:00+00:00"]
    assert len(runs("every-minute")) == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrency is proven on "
                    "PostgreSQL (SQLite serialises writers)")
@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_of_fresh_processes_run_each_row_once(no_publish):
    rows = [periodic(f"race-{i}", cron) for i, cron in
            enumerate(["* * * * *", "0 * * * *", "*/5 * * * *", "30 3 * * *"] * 5)]
    barrier = threading.Barrier(8)
    reports, errors = [], []

    def fresh_process() -> None:
        try:
            barrier.wait()
            reports.append(run_beat(at("2026-11-23T12:00:00")))
            with beat._book_lock:  # the next call plays a new process: it knows nothing
                beat._book = beat._Book()
            barrier.wait()
            reports.append(run_beat(at("2026-11-23T12:00:30")))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fresh_process) for _ in range(8)]
    start_and_join(threads)
    assert errors == []
    enqueued = sorted(e["schedule"] for r in reports for e in r.enqueued)
    assert enqueued == sorted(r.schedule_key for r in rows if r.cron != "30 3 * * *")
    assert TaskExecution.objects.count() == len(enqueued) == len(no_publish)


@pytest.mark.django_db
def test_admin_form_quotes_the_reason_for_a_bad_cron_or_task(admin_client):
    url = reverse("admin:django_i3tasks_periodictask_add")
    page = admin_client.get(url)
    assert page.status_code == 200 and f'value="{tick.name}"' in page.content.decode()
    form = {"name": "n", "task_name": tick.name, "cron": "61 * * * *", "timezone": "UTC",
            "args": "[]", "kwargs": "{}", "queue_name": "", "enabled": "on",
            "description": ""}
    bad_cron = admin_client.post(url, form)
    assert bad_cron.status_code == 200
    assert "&#x27;61 * * * *&#x27; is not a valid cron expression" in bad_cron.content.decode()
    unknown = admin_client.post(url, {**form, "cron": "* * * * *", "task_name": "os.system"})
    assert "&#x27;os.system&#x27; is not a registered task" in unknown.content.decode()
    bad_zone = admin_client.post(url, {**form, "cron": "* * * * *", "timezone": "Mars/Base"})
    assert "is not a known time zone" in bad_zone.content.decode()
    assert not PeriodicTask.objects.exists()
    ok = admin_client.post(url, {**form, "cron": "*/5 * * * *"})
    assert ok.status_code == 302
    row = PeriodicTask.objects.get()
    assert row.task_name == tick.name and row.next_run_at is not None


@pytest.mark.django_db
def test_admin_lists_settings_schedules_read_only(admin_client, i3settings):
    setting = Schedule("tests.testapp.beat_tasks", "tick", "0 3 * * *", name="nightly-report")
    i3settings(schedules=(setting,))
    page = admin_client.get(reverse("admin:django_i3tasks_periodictask_changelist"))
    html = page.content.decode()
    assert page.status_code == 200 and "Schedules from settings" in html
    assert "nightly-report" in html and "0 3 * * *" in html


@pytest.mark.django_db(transaction=True)
def test_admin_list_shows_last_and_next_run_and_an_invalid_row_is_skipped(
    admin_client, no_publish
):
    row = periodic()
    broken = periodic("broken")
    PeriodicTask.objects.filter(pk=broken.pk).update(cron="not a cron",
                                                     revision=F("revision") + 1)
    report = run_beat(at("2026-11-23T12:00:00"))
    assert [e["schedule"] for e in report.enqueued] == [row.schedule_key]
    assert report.skipped == [{"schedule": broken.schedule_key, "slot": "",
                               "reason": "invalid_schedule"}]
    page = admin_client.get(reverse("admin:django_i3tasks_periodictask_changelist"))
    rows = {r.pk: r for r in page.context["cl"].result_list}
    assert rows[row.pk].last_run_at == at("2026-11-23T12:00:00")
    assert rows[row.pk].next_run_at == at("2026-11-23T12:01:00")
    assert rows[broken.pk].last_run_at is None
