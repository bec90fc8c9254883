"""Limits and timing without Pub/Sub: options, keys, admission and its race, leases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections
from django.urls import reverse

from django_i3tasks import TaskDecorator, lifecycle
from django_i3tasks.exceptions import InvalidTaskOption, TaskUsageError
from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.messages import TaskMessage
from django_i3tasks.models import TaskExecution, TaskExecutionTry
from django_i3tasks.registry import registry
from tests.testapp import limit_tasks

transactional = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_spans() -> None:
    limit_tasks.SPANS.clear()


def message_for(handle: Any) -> TaskMessage:
    execution = TaskExecution.objects.get(pk=handle.id)
    attempt = execution.tries.order_by("-number").first()
    return TaskMessage.of(execution, attempt.pk, attempt.number)


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize("options, error", [
    ({"concurrency_limit": 0}, InvalidTaskOption),
    ({"concurrency_limit": "2"}, TaskUsageError),
    ({"rate_limit": "10/d"}, InvalidTaskOption),
    ({"rate_limit": "0/s"}, InvalidTaskOption),
    ({"rate_limit": 10}, TaskUsageError),
    ({"concurrency_key": "customer"}, TaskUsageError),
    ({"lease_seconds": 0}, InvalidTaskOption),
])
def test_bad_limit_options_are_refused_at_import(options, error):
    with pytest.raises(error):
        TaskDecorator(**options)(lambda: None)


def test_rate_limit_is_parsed():
    assert limit_tasks.five_a_second.rate == (5, 1.0)
    assert TaskDecorator(rate_limit="3/h")(lambda: None).rate == (3, 3600.0)
    assert limit_tasks.stamped.rate is None and not limit_tasks.stamped.limited


@pytest.mark.django_db
def test_concurrency_key_is_stored_on_the_execution(no_publish):
    handle = limit_tasks.per_customer.delay("acme", "t1")
    assert TaskExecution.objects.get(pk=handle.id).concurrency_key == "customer:acme"
    plain = limit_tasks.two_at_a_time.delay("t2")
    assert TaskExecution.objects.get(pk=plain.id).concurrency_key == ""


@pytest.mark.django_db
def test_map_stores_each_calls_key(no_publish):
    handles = limit_tasks.per_customer.starmap([("acme", "m1"), ("globex", "m2")])
    keys = [TaskExecution.objects.get(pk=h.id).concurrency_key for h in handles]
    assert keys == ["customer:acme", "customer:globex"]
    assert TaskExecution.objects.filter(
        pk__in=[h.id for h in limit_tasks.two_at_a_time.map(["a", "b"])],
        concurrency_key="").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("task, args, words", [
    (limit_tasks.raising_key, ("acme",), "raised LookupError"),
    (limit_tasks.int_key, (7,), "must return a str"),
])
def test_a_bad_concurrency_key_is_a_usage_error_and_writes_nothing(no_publish, task, args,
                                                                    words):
    with pytest.raises(TaskUsageError, match=words):
        task.delay(*args)
    assert TaskExecution.objects.count() == 0 and no_publish == []


def test_sync_run_is_exempt_from_limits():
    assert limit_tasks.two_at_a_time.sync_run("inline", 0.0) == "inline"
    assert "exempt" in (type(limit_tasks.two_at_a_time).sync_run.__doc__ or "")


# --- per-task lease ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_claim_takes_the_tasks_own_lease(no_publish):
    handle = limit_tasks.slot_holder.delay("lease", 0.0)
    from django_i3tasks.execution import _claim

    before = time.time()
    token = _claim(limit_tasks.slot_holder, message_for(handle), 0.0, True)
    assert not isinstance(token, type(None))
    attempt = TaskExecutionTry.objects.get(execution_id=handle.id)
    lease = attempt.lease_expires_at.timestamp() - before
    assert 2.5 < lease < 4.0  # lease_seconds=3, not I3TASKS.lease_seconds (600)


def _long_export() -> None:
    pass


def test_time_limit_check_uses_the_tasks_lease(monkeypatch):
    from django_i3tasks.checks import check_settings

    task = TaskDecorator(time_limit=20, lease_seconds=10)(_long_export)
    try:
        found = [m.msg for m in check_settings() if "lease_seconds" in m.msg]
        assert any(f"{task.name} has time_limit=20 s, not below its lease_seconds = 10" in msg
                   for msg in found), found
        long_lease = TaskDecorator(time_limit=20, lease_seconds=30)(_long_export)
        assert not [m for m in check_settings() if long_lease.name in m.msg]
    finally:
        registry._tasks.pop(task.name, None)


# --- admission --------------------------------------------------------------------------


@transactional
def test_an_over_limit_delivery_is_not_a_try_and_waits_with_its_reason(no_publish, client,
                                                                       admin_client):
    first = limit_tasks.per_customer.delay("acme", "first")
    second = limit_tasks.per_customer.delay("acme", "second")
    limits = lifecycle.Limits(1, None)
    token = lifecycle.claim(message_for(first), None, limits)
    assert not hasattr(token, "status")
    outcome = run_message(message_for(second))
    assert outcome.status == OutcomeStatus.OVER_LIMIT and not outcome.ack
    assert outcome.detail == "concurrency:customer:acme"
    parked = TaskExecution.objects.get(pk=second.id)
    assert (parked.status, parked.wait_reason) == ("waiting", "concurrency:customer:acme")
    (attempt,) = parked.tries.all()
    assert (attempt.number, attempt.status, attempt.claims) == (1, "queued", 0)
    from django_i3tasks.results import get_result

    assert get_result(second.uuid).status == "waiting"
    body = client.get(reverse("django_i3tasks:status", args=[second.uuid])).json()
    assert (body["status"], body["waiting_for"]) == ("waiting", "concurrency:customer:acme")
    page = admin_client.get(reverse("admin:django_i3tasks_taskexecution_changelist"))
    assert "concurrency:customer:acme" in page.content.decode()
    # Another key is not held back.
    other = limit_tasks.per_customer.delay("globex", "other")
    assert run_message(message_for(other)).status == OutcomeStatus.SUCCESS
    # The finishing try releases the parked execution and sends its queued try again.
    no_publish.clear()
    lifecycle.record_success(message_for(first), token, "first", limited=True)
    parked.refresh_from_db()
    assert (parked.status, parked.wait_reason) == ("pending", "")
    assert [(m.execution_id, m.try_number) for m in no_publish] == [(second.id, 1)]
    assert run_message(no_publish[0]).status == OutcomeStatus.SUCCESS


@transactional
def test_an_expired_lease_frees_the_slot(no_publish):
    first = limit_tasks.one_at_a_time.delay("dead")
    second = limit_tasks.one_at_a_time.delay("next")
    limits = lifecycle.Limits(1, None)
    assert not hasattr(lifecycle.claim(message_for(first), 0.5, limits), "status")
    assert run_message(message_for(second)).status == OutcomeStatus.OVER_LIMIT
    time.sleep(0.6)  # the first try's worker "died": nothing records it
    assert run_message(message_for(second)).status == OutcomeStatus.SUCCESS


@transactional
def test_eight_threads_delivering_one_over_limit_message_start_it_once(no_publish):
    if connection.vendor != "postgresql":
        pytest.skip("a race between connections: PostgreSQL")
    holder = limit_tasks.one_at_a_time.delay("holder")
    waiting = limit_tasks.one_at_a_time.delay("raced")
    limits = lifecycle.Limits(1, None)
    token = lifecycle.claim(message_for(holder), None, limits)
    message = message_for(waiting)
    assert run_message(message).status == OutcomeStatus.OVER_LIMIT
    start = threading.Barrier(9)
    outcomes: list[Any] = []

    def deliver() -> None:
        try:
            start.wait()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                outcome = run_message(message)
                outcomes.append(outcome.status)
                if outcome.ack:
                    return
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(0.05)
    lifecycle.record_success(message_for(holder), token, "holder", limited=True)
    for thread in threads:
        thread.join(30)
    raced = [tag for tag, _, _ in limit_tasks.spans("one_at_a_time") if tag == "raced"]
    assert raced == ["raced"], outcomes
    (attempt,) = TaskExecutionTry.objects.filter(execution_id=waiting.id)
    assert (attempt.status, attempt.claims) == ("success", 1)
    assert outcomes.count(OutcomeStatus.SUCCESS) == 1


@transactional
def test_a_parked_execution_is_reported_not_stuck_and_can_be_cancelled(no_publish, i3settings):
    from django_i3tasks.maintenance import health_report

    holder = limit_tasks.one_at_a_time.delay("holds")
    parked = limit_tasks.one_at_a_time.delay("parked")
    assert not hasattr(lifecycle.claim(message_for(holder), None, lifecycle.Limits(1, None)),
                       "status")
    message = message_for(parked)
    assert run_message(message).status == OutcomeStatus.OVER_LIMIT
    i3settings(recovery_after_seconds=0)
    report = health_report()
    assert report.parked == {f"concurrency:{limit_tasks.one_at_a_time.name}": 1}
    assert report.stuck_queued == 0 and report.healthy
    assert parked.cancel()
    assert run_message(message).status == OutcomeStatus.CANCELLED
    assert limit_tasks.spans("one_at_a_time") == []


@pytest.mark.django_db
def test_the_pull_worker_holds_a_try_due_soon_on_a_timer(monkeypatch, no_publish):
    from concurrent.futures import ThreadPoolExecutor

    from django_i3tasks import worker
    from django_i3tasks.execution import Outcome
    from tests.db.test_worker import FakeMessage, _unit_worker
    from tests.testapp.worker_tasks import nap

    nap.delay("soon")
    data, attributes = no_publish[0].encode()
    answers = [Outcome(OutcomeStatus.NOT_DUE, ack=False, retry_after=0.3),
               Outcome(OutcomeStatus.SUCCESS, ack=True)]
    holds: list[float] = []
    monkeypatch.setattr(worker, "run_message",
                        lambda *a, **k: holds.append(k["hold"]) or answers.pop(0))
    target = _unit_worker()
    target._executor = ThreadPoolExecutor(max_workers=1)
    message = FakeMessage(data, attributes)
    began = time.monotonic()
    target.handle(message)
    assert message.calls == []  # neither dropped nor nacked: still leased, on a timer
    wait_for_calls = time.monotonic() + 5
    while not message.calls and time.monotonic() < wait_for_calls:
        time.sleep(0.01)
    assert message.calls == [("ack", None)] and time.monotonic() - began >= 0.3
    assert holds[0] == target._hold > 0 and target.stats.counts["held"] == 1
    target._executor.shutdown()
