"""Workflows that carry results: ``.pipe()``, group results (``pass_results``) and failure
handlers (``on_failure``), each handed over by the transaction that records the end."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from django_i3tasks import TaskGroup, transport
from django_i3tasks.exceptions import PayloadTooLarge, TaskUsageError
from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import ExecutionStatus, GroupStatus, TaskExecution
from tests.helpers import message_of, post_at_once, push_envelope, wait_for
from tests.testapp import tasks
from tests.testapp.workflow_tasks import (
    HANDLED,
    STORED,
    SUMMARIES,
    alert,
    breaks,
    fetch,
    parse,
    slow_break,
    square,
    square_or_break,
    store,
    summarize,
    unjsonable,
)


@pytest.fixture(autouse=True)
def _clear() -> None:
    HANDLED.clear()
    SUMMARIES.clear()
    STORED.clear()


def status(handle) -> str:
    return TaskExecution.objects.get(pk=handle.id).status


def run_all(sent, start=0):
    """Run the collected messages in order, also those sent while running; the count."""
    index = start
    while index < len(sent):
        run_message(sent[index])
        index += 1
    return index


# --- pipe -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pipe_hands_each_value_on(no_publish):
    last = fetch.delay("a").pipe(parse, upper=True).pipe(store, "bucket")
    assert len(no_publish) == 1
    run_all(no_publish)
    assert STORED == [({"text": "A", "from": "a"}, "bucket")]
    assert last.wait_result(5) == "bucket/A"
    assert TaskExecution.objects.get(pk=last.id).args == [{"text": "A", "from": "a"}, "bucket"]


@pytest.mark.django_db
def test_pipe_after_then_and_then_after_pipe_pass_only_what_they_should(no_publish):
    head = fetch.delay("b")
    audit = head.then(square, 3)  # .then() passes nothing
    piped = audit.pipe(summarize, "after-square")
    run_all(no_publish)
    assert TaskExecution.objects.get(pk=audit.id).args == [3]
    assert SUMMARIES == [{"index": 3, "square": 9}]
    assert status(piped) == ExecutionStatus.SUCCESS


@pytest.mark.django_db
def test_pipe_added_after_the_previous_step_succeeded_gets_its_value(no_publish):
    head = fetch.delay("late")
    run_message(no_publish[0])
    step = head.pipe(parse)
    assert step.task_execution.status == ExecutionStatus.PENDING
    assert no_publish[-1].args == [{"url": "late", "body": "<p>late</p>"}]
    run_all(no_publish, 1)
    assert step.wait_result(5) == {"text": "late", "from": "late"}


@pytest.mark.django_db
def test_pipe_on_a_built_chain(no_publish):
    root = fetch.build_chain("built")
    step = root.pipe(parse)
    group = TaskGroup.create(callback=root, total_count=0)
    assert group.status == GroupStatus.SUCCESS
    run_all(no_publish)
    assert step.wait_result(5) == {"text": "built", "from": "built"}


@pytest.mark.django_db
def test_pipe_checks_the_signature_with_the_value_in_place(no_publish):
    head = fetch.delay("c")
    with pytest.raises(TypeError, match="too many positional arguments"):
        head.pipe(parse, True, "extra")
    with pytest.raises(TypeError, match="missing a required argument: 'bucket'"):
        head.pipe(store)
    assert TaskExecution.objects.count() == 1


@pytest.mark.django_db
def test_a_value_stored_as_its_repr_is_handed_over_as_the_string(no_publish):
    last = unjsonable.delay("x").pipe(summarize)
    run_all(no_publish)
    assert SUMMARIES == ["{'x'}"]
    assert status(last) == ExecutionStatus.SUCCESS


@pytest.mark.django_db
def test_a_hand_over_over_the_payload_limit_fails_the_step_clearly(no_publish, i3settings):
    i3settings(max_payload_bytes=200)
    big = fetch.delay("x" * 150)
    step = big.pipe(parse)
    step.on_failure(alert)
    run_all(no_publish)
    assert status(step) == ExecutionStatus.FAILED
    try_row = TaskExecution.objects.get(pk=step.id).tries.get()
    assert try_row.error_type == f"{PayloadTooLarge.__module__}.PayloadTooLarge"
    assert "max_payload_bytes" in try_row.error_message
    assert [f["execution_uuid"] for f, _ in HANDLED] == [str(step.uuid)]


# --- failure handlers -----------------------------------------------------------------------


@pytest.mark.django_db
def test_handler_on_a_skipped_step_describes_the_step_that_failed(no_publish):
    first = fetch.delay("d")
    second = first.then(breaks, "two")
    third = second.then(square, 3).on_failure(alert, "ops")
    assert isinstance(third.task_execution, TaskExecution)
    run_all(no_publish)
    assert status(third) == ExecutionStatus.SKIPPED
    ((failure, channels),) = HANDLED
    assert channels == ("ops",)
    assert failure == {
        "execution_uuid": str(second.uuid), "task_name": breaks.name, "status": "failed",
        "error": "builtins.RuntimeError: step two is broken", "tries": 1,
    }
    handler = TaskExecution.objects.get(task_name=alert.name)
    assert handler.handler_of_id == third.id


@pytest.mark.django_db
def test_handler_attached_after_the_end_runs_at_once_and_once(no_publish):
    handle = breaks.delay("early")
    run_message(no_publish[0])
    handle.on_failure(alert)
    assert run_message(no_publish[0]).status == OutcomeStatus.DUPLICATE
    run_all(no_publish, 1)
    assert [f["status"] for f, _ in HANDLED] == ["failed"]


@pytest.mark.django_db
def test_handler_runs_on_cancel_and_not_on_success(no_publish):
    cancelled = square.delay(1).on_failure(alert, "c")
    fine = square.delay(2).on_failure(alert, "f")
    assert cancelled.cancel()
    run_all(no_publish)
    assert status(fine) == ExecutionStatus.SUCCESS
    ((failure, channels),) = HANDLED
    assert channels == ("c",) and failure["status"] == "cancelled"
    assert failure["tries"] == 0 and failure["error"] is None


@pytest.mark.django_db
def test_decorator_on_failure_runs_for_every_execution_of_the_task(no_publish):
    a = slow_break.delay("a", 0)
    b, c = slow_break.starmap([("b", 0), ("c", 0)])  # the bulk path stores them too
    run_all(no_publish)
    assert sorted(f["execution_uuid"] for f, _ in HANDLED) == sorted(
        [str(a.uuid), str(b.uuid), str(c.uuid)])
    assert all(f["error"].startswith("builtins.RuntimeError: ") for f, _ in HANDLED)


@pytest.mark.django_db
def test_on_failure_checks_the_handler_signature(no_publish):
    handle = square.delay(1)
    with pytest.raises(TypeError, match="too many positional arguments"):
        handle.on_failure(square, 1)  # square(failure, 1): one argument too many
    with pytest.raises(TaskUsageError, match="on_failure must be a task"):
        TaskGroup.create(callback=summarize, total_count=1, on_failure=print)


# --- groups ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_group_results_in_map_order_then_one_by_one_members(no_publish):
    group = TaskGroup.create(callback=summarize, total_count=5, pass_results=True)
    square.map([4, 3], group=group)
    square.delay(2, __i3group__=group)
    square.starmap([[1], [0]], group=group)
    for message in reversed(list(no_publish)):  # members finish in reverse order
        run_message(message)
    run_all(no_publish, 5)
    assert SUMMARIES == [[{"index": i, "square": i * i} for i in (4, 3, 2, 1, 0)]]
    positions = list(TaskExecution.objects.filter(group=group).order_by("position")
                     .values_list("position", flat=True))
    assert positions == [0, 1, 2, 3, 4]


@pytest.mark.django_db
def test_group_results_over_the_payload_limit_fail_the_callback(no_publish, i3settings):
    group = TaskGroup.create(callback=summarize, total_count=30, pass_results=True,
                             on_failure=alert)
    square.map(range(30), group=group)
    i3settings(max_payload_bytes=300)
    run_all(no_publish)
    group.refresh_from_db()
    callback = TaskExecution.objects.get(pk=group.callback_id)
    assert callback.status == ExecutionStatus.FAILED and SUMMARIES == []
    assert "max_payload_bytes" in callback.tries.get().error_message


@pytest.mark.django_db
def test_group_on_failure_runs_once_and_the_callback_never(no_publish):
    group = TaskGroup.create(callback=summarize, total_count=10, pass_results=True,
                             on_failure=alert)
    handles = square_or_break.map(range(10), group=group)
    for message in list(no_publish):
        run_message(message)
        run_message(message)  # every message twice
    run_all(no_publish, 10)
    group.refresh_from_db()
    assert group.status == GroupStatus.FAILED and SUMMARIES == []
    ((failure, _),) = HANDLED
    assert failure["execution_uuid"] == str(handles[7].uuid)
    assert failure["group_uuid"] == str(group.uuid)
    assert failure["error"] == "builtins.ValueError: member 7 breaks"
    assert group.failure_handler.task_name == alert.name
    assert TaskExecution.objects.get(pk=group.callback_id).status == ExecutionStatus.SKIPPED


@pytest.mark.django_db
def test_pass_results_needs_a_task_callback():
    with pytest.raises(TaskUsageError, match="pass_results=True takes a task"):
        TaskGroup.create(callback=summarize.build_chain([]), total_count=1, pass_results=True)


# --- end to end through the emulator's push -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_e2e_three_step_pipe_chain_hands_each_value_on(push_queue):
    last = fetch.delay("e2e").pipe(parse, upper=True).pipe(store, "bucket")
    transport.flush()
    assert last.wait_result(30) == "bucket/E2E"
    assert STORED == [({"text": "E2E", "from": "e2e"}, "bucket")]
    assert tasks.CALLS["fetch:e2e"] == tasks.CALLS["parse:e2e"] == tasks.CALLS["store:bucket"] == 1


@pytest.mark.django_db(transaction=True)
def test_e2e_group_of_50_passes_results_in_item_order_also_delivered_twice(push_queue):
    items = list(range(49, -1, -1))  # not the order of ids or of finishing
    group = TaskGroup.create(callback=summarize, total_count=50, pass_results=True)
    handles = square.map(items, group=group)
    bodies = [push_envelope(*message_of(h).encode()) for h in handles]
    transport.flush()
    for body in bodies:  # every member's message once more, while Pub/Sub pushes it
        post_at_once(push_queue, body, 1)
    wait_for(lambda: tasks.CALLS["summarize:sum"] >= 1, timeout=60)
    wait_for(lambda: TaskExecution.objects.get(pk=group.callback_id).status
             == ExecutionStatus.SUCCESS, timeout=30)
    assert tasks.CALLS["summarize:sum"] == 1
    assert SUMMARIES == [[{"index": i, "square": i * i} for i in items]]
    assert all(tasks.CALLS[f"square:{i}"] == 1 for i in items)


@pytest.mark.django_db(transaction=True)
def test_e2e_failed_second_step_calls_the_third_steps_handler_once(push_queue):
    first = fetch.delay("f")
    second = first.pipe(breaks)
    third = second.then(square, 3).on_failure(alert, "ops")
    transport.flush()
    wait_for(lambda: tasks.CALLS["alert:breaks"] == 1, timeout=30)
    wait_for(lambda: TaskExecution.objects.filter(task_name=alert.name,
                                                  status=ExecutionStatus.SUCCESS).exists())
    ((failure, channels),) = HANDLED
    assert channels == ("ops",)
    assert failure["execution_uuid"] == str(second.uuid) and failure["status"] == "failed"
    assert failure["error"].startswith("builtins.RuntimeError: step {'url': 'f'")
    assert status(third) == ExecutionStatus.SKIPPED and tasks.CALLS["square:3"] == 0


@pytest.mark.django_db(transaction=True)
def test_e2e_last_try_delivered_three_times_concurrently_calls_the_handler_once(
        push_queue, i3settings):
    """A one-second lease and a task that runs 2.5 s: three deliveries posted at once race
    the emulator's own push, and Pub/Sub redelivers the ones told "running"; after a lease
    ran out a delivery takes the try over and runs it again, so several runs record a
    failure at nearly the same time. One of them ends the execution; the handler runs
    once."""
    i3settings(lease_seconds=1)
    handle = slow_break.delay("race", 2.5)
    body = push_envelope(*message_of(handle).encode())
    answers = post_at_once(push_queue, body, 3)
    transport.flush()
    wait_for(lambda: status(handle) == ExecutionStatus.FAILED, timeout=30)
    wait_for(lambda: tasks.CALLS["alert:slow_break"] >= 1, timeout=30)
    answers += post_at_once(push_queue, body, 2)  # and twice more after the end
    wait_for(lambda: not TaskExecution.objects.filter(
        task_name=alert.name, status=ExecutionStatus.PENDING).exists())
    (last_try,) = TaskExecution.objects.get(pk=handle.id).tries.all()
    assert last_try.claims >= 2 and tasks.CALLS["slow_break:race"] >= 2  # it did race
    assert tasks.CALLS["alert:slow_break"] == 1
    assert TaskExecution.objects.filter(task_name=alert.name).count() == 1
    assert all(code < 500 for code in answers)


@pytest.mark.django_db(transaction=True)
def test_e2e_group_with_a_failing_member_calls_on_failure_once_never_the_callback(push_queue):
    group = TaskGroup.create(callback=summarize, total_count=12, pass_results=True,
                             on_failure=alert)
    square_or_break.map(range(12), group=group)
    transport.flush()
    wait_for(lambda: tasks.CALLS["alert:square_or_break"] == 1, timeout=30)
    wait_for(lambda: all(tasks.CALLS[f"square_or_break:{i}"] for i in range(12)), timeout=30)
    group.refresh_from_db()
    assert group.status == GroupStatus.FAILED
    assert tasks.CALLS["summarize:sum"] == 0 and len(HANDLED) == 1
    assert HANDLED[0][0]["group_uuid"] == str(group.uuid)


# --- races on PostgreSQL --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_race_attaching_a_handler_while_the_step_fails_runs_it_once(no_publish):
    """``.on_failure()`` and the final failure commit at the same moment, 20 times."""
    for round_ in range(20):
        handle = breaks.delay(f"r{round_}")
        message = message_of(handle)
        barrier = threading.Barrier(2)

        def fail(message=message, barrier=barrier):
            barrier.wait()
            try:
                run_message(message)
            finally:
                connection.close()

        def attach(handle=handle, barrier=barrier, round_=round_):
            barrier.wait()
            try:
                handle.on_failure(alert, f"r{round_}")
            finally:
                connection.close()

        threads = [threading.Thread(target=fail), threading.Thread(target=attach)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert TaskExecution.objects.filter(handler_of_id=handle.id).count() == 1, round_


@pytest.mark.django_db
def test_handler_runs_on_expiry_and_not_while_tries_are_left(no_publish):
    import time

    expired = square.using(expires=0.05).delay(5).on_failure(alert, "late")
    time.sleep(0.1)
    assert run_message(no_publish[0]).status == OutcomeStatus.EXPIRED
    run_all(no_publish, 1)  # the handler
    assert status(expired) == ExecutionStatus.EXPIRED
    ((failure, channels),) = HANDLED
    assert channels == ("late",) and failure["status"] == "expired" and failure["tries"] == 0

    from tests.testapp.tasks import fails_once

    once = fails_once.delay("h").on_failure(alert)
    sent = len(no_publish)
    assert run_message(message_of(once)).status == OutcomeStatus.RETRY
    assert [m.task_name for m in no_publish[sent:]] == [fails_once.name]  # the next try only
    assert len(HANDLED) == 1 and status(once) == ExecutionStatus.PENDING
