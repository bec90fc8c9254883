"""The pull worker without a database or Pub/Sub: startup errors, the jitter of
its deadlines, the status line."""

from __future__ import annotations

import math
import time

import pytest
from django.core.management import CommandError, call_command

from django_i3tasks import worker
from django_i3tasks.worker import Worker, WorkerError, WorkerOptions


def test_unknown_queue_is_a_command_error(settings):
    with pytest.raises(CommandError, match="queue 'nope'; configured: default, heavy"):
        call_command("i3tasks_worker", queue="nope")


def test_push_queue_is_a_command_error(settings):
    with pytest.raises(CommandError, match="'default' is a push queue"):
        call_command("i3tasks_worker", queue="default")


def test_unreachable_emulator_is_refused_at_startup(monkeypatch):
    from django_i3tasks.testing.emulator import free_port

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    began = time.monotonic()
    with pytest.raises(WorkerError, match="cannot reach 127.0.0.1"):
        Worker(WorkerOptions("heavy")).check_subscription(timeout=2)
    assert time.monotonic() - began < 15


def test_jitter_lowers_by_at_most_a_tenth():
    import random

    rng = random.Random(7)
    values = [worker.jittered(100.0, rng) for _ in range(1000)]
    assert 90.0 <= min(values) < 91.0 and 99.0 < max(values) <= 100.0
    assert math.isclose(sum(values) / len(values), 95.0, abs_tol=0.5)


def test_status_line_rate_is_since_the_previous_line(monkeypatch):
    clock = iter([100.0, 110.0, 115.0])
    monkeypatch.setattr(worker.time, "monotonic", lambda: next(clock))
    stats = worker.Stats()  # started at 100
    stats.add("success", 20)
    stats.add("duplicate", 7)  # acknowledged, but no task ran: not counted as processed
    first = stats.line("heavy")  # at 110: 20 in 10 s
    stats.add("failed", 20)
    second = stats.line("heavy")  # at 115: 20 more in 5 s; 40 in 15 s overall
    assert "processed=20 " in first and "rate=2.0/s average=2.0/s" in first
    assert "processed=40 " in second and "rate=4.0/s average=2.7/s" in second
    assert "duplicates=7 " in second
