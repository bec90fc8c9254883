"""The beat's slots: which cron slot is due, and the Cloud Scheduler time header."""

from __future__ import annotations

import pytest

from django_i3tasks.beat import latest_slot, parse_schedule_time
from django_i3tasks.types import Schedule
from tests.helpers import DAILY, HOURLY, MINUTELY, at


@pytest.mark.parametrize(
    ("schedule", "when", "expected"),
    [
        (MINUTELY, "2026-11-23T12:00:00", "2026-11-23T12:00:00"),
        (MINUTELY, "2026-11-23T12:00:59.999", "2026-11-23T12:00:00"),
        (HOURLY, "2026-11-23T12:59:00", "2026-11-23T12:00:00"),
        (DAILY, "2026-11-23T03:29:00", "2026-11-22T03:30:00"),
        (
            Schedule("m", "f", "0 9 * * *", timezone="Europe/Rome"),
            "2026-11-23T08:30:00",  # 09:30 in Rome (UTC+1 in November)
            "2026-11-23T08:00:00",
        ),
        (
            Schedule("m", "f", "0 9 * * *", timezone="Europe/Rome"),
            "2026-07-01T07:30:00",  # 09:30 in Rome (UTC+2 in July)
            "2026-07-01T07:00:00",
        ),
    ],
)
def test_latest_slot(schedule, when, expected):
    assert latest_slot(schedule, at(when)) == at(expected)


def test_slot_window_is_latest_and_next_slot():
    from django_i3tasks.beat import _slot_window

    assert _slot_window("0 * * * *", "UTC", at("2026-11-23T12:30:00")) == (
        at("2026-11-23T12:00:00"), at("2026-11-23T13:00:00"))
    assert _slot_window("* * * * *", "UTC", at("2026-11-23T12:00:00")) == (
        at("2026-11-23T12:00:00"), at("2026-11-23T12:01:00"))


def test_schedule_time_header():
    now = at("2026-11-23T12:00:30")
    assert parse_schedule_time("2026-11-23T12:00:00Z", now) == at("2026-11-23T12:00:00")
    assert parse_schedule_time("2026-11-23T12:00:00.52Z", now) == at("2026-11-23T12:00:00.52")
    assert parse_schedule_time("2026-11-23T13:00:00+01:00", now) == at("2026-11-23T12:00:00")
    for bad in ("yesterday", "2026-11-23T12:00:00", "", "2026-11-23T13:00:00Z"):
        with pytest.raises(ValueError, match="ScheduleTime"):
            parse_schedule_time(bad, now)
