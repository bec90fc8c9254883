"""``PubSubBackend`` keeps the contract of Django's own tasks backends, where Django's own
``tests/tasks`` found it did not (the conformance leg of the test command runs those):
Django's signals, JSON results, per-alias options, ``SystemExit``, ``using()`` kept by results,
Django's messages for bad arguments and for priority.

Skipped where Django's tasks API is not installed. The ``SystemExit`` tests go through the
real emulator: push to the live server over HTTP, and the pull worker.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timedelta
from importlib.util import find_spec
from typing import Any, NamedTuple

import pytest

if find_spec("django.tasks") is None and find_spec("django_tasks") is None:
    pytest.skip("Django's tasks API is not installed", allow_module_level=True)

from django.db import transaction
from django.utils import timezone

from django_i3tasks import outbox, signals, transport
from django_i3tasks.backends import InvalidTask, PubSubBackend, TaskResultStatus
from django_i3tasks.exceptions import ArgumentsNotSerializable
from django_i3tasks.execution import OutcomeStatus, run_message
from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
from django_i3tasks.registry import registry
from django_i3tasks.tasks_api import api_signals
from tests.helpers import wait_for
from tests.testapp import api_tasks, tasks

pytestmark = pytest.mark.django_db(transaction=True)


class Event(NamedTuple):
    name: str
    sender: Any
    id: str
    status: str
    backend: str
    queue_name: str
    handling: type[BaseException] | None  # the exception being handled when it was sent


@pytest.fixture
def api_events() -> Any:
    """What Django's own task signals send."""
    events: list[Event] = []

    def receiver(name: str) -> Any:
        def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
            events.append(Event(name, sender, task_result.id, str(task_result.status),
                                task_result.backend, task_result.task.queue_name,
                                sys.exc_info()[0]))
        return receive

    connected = [(getattr(api_signals, f"task_{name}"), receiver(name))
                 for name in ("enqueued", "started", "finished")]
    for signal, receive in connected:
        signal.connect(receive)
    yield events
    for signal, receive in connected:
        signal.disconnect(receive)


@pytest.fixture
def our_events() -> Any:
    """What our own signals send (they keep firing beside Django's)."""
    events: list[str] = []

    def receive(signal_name: str) -> Any:
        return lambda sender, **kwargs: events.append(signal_name)

    connected = [(getattr(signals, f"task_{name}"), receive(name))
                 for name in ("enqueued", "started", "finished")]
    for signal, receiver in connected:
        signal.connect(receiver)
    yield events
    for signal, receiver in connected:
        signal.disconnect(receiver)


class Published(outbox.PubSubOutbox):
    """The production outbox (publish after commit), publishing into a list."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def publish(self, messages: Any) -> None:
        self.messages.extend(messages)


def finished(result: Any) -> bool:
    result.refresh()
    return bool(result.is_finished)


# --- 1. Django's signals, in every outbox mode ---------------------------------------------


def test_djangos_signals_inline_in_order_beside_ours(i3settings, api_events, our_events):
    i3settings(force_sync=True)
    result = api_tasks.api_add.enqueue(1, 2)
    assert [(e.name, e.status) for e in api_events] == [
        ("enqueued", "READY"), ("started", "RUNNING"), ("finished", "SUCCESSFUL")]
    assert {e.id for e in api_events} == {result.id}
    assert {e.sender for e in api_events} == {PubSubBackend}  # the backend's class, as Django's
    assert our_events == ["enqueued", "started", "finished"]


def test_djangos_signals_with_pubsub_enqueued_after_commit_then_run_by_the_runner(api_events):
    published = Published()
    with outbox.use(published):
        with transaction.atomic():
            result = api_tasks.api_add.using(queue_name="heavy").enqueue(3, 4)
            assert api_events == []  # nothing is announced before the commit
        assert [(e.name, e.status, e.id, e.queue_name) for e in api_events] == [
            ("enqueued", "READY", result.id, "heavy")]
        (message,) = published.messages
    # What the push view and the pull worker run for the message.
    assert run_message(message).status == OutcomeStatus.SUCCESS
    assert [(e.name, e.status) for e in api_events[1:]] == [
        ("started", "RUNNING"), ("finished", "SUCCESSFUL")]


def test_djangos_enqueued_is_sent_at_once_with_the_recording_outbox(api_events):
    with outbox.use(outbox.RecordingOutbox()) as recording:
        with transaction.atomic():
            result = api_tasks.api_add.enqueue(5, 6)
            assert [(e.name, e.status, e.id) for e in api_events] == [
                ("enqueued", "READY", result.id)]
        assert len(api_events) == 1  # the commit does not announce it again
        recording.run(recording.records[0])
    assert [e.name for e in api_events] == ["enqueued", "started", "finished"]


def test_djangos_enqueued_for_a_delayed_task_comes_when_the_beat_releases_it(i3settings,
                                                                            api_events):
    from django_i3tasks.beat import run_beat

    i3settings(force_sync=True)
    when = timezone.now() + timedelta(minutes=5)
    result = api_tasks.api_add.using(run_after=when).enqueue(2, 2)
    assert api_events == []  # written scheduled: not handed to the transport yet
    run_beat(now=when + timedelta(minutes=1))
    assert [(e.name, e.id) for e in api_events] == [
        ("enqueued", result.id), ("started", result.id), ("finished", result.id)]


def test_djangos_task_finished_once_when_it_ends_while_the_error_is_handled(i3settings,
                                                                            api_events):
    i3settings(force_sync=True)
    result = api_tasks.api_fails.using(backend="retrying").enqueue("sig")  # MAX_RETRIES=1
    assert [e.name for e in api_events] == ["enqueued", "started", "started", "finished"]
    last = api_events[-1]
    assert (last.status, last.id, last.backend, last.handling) == (
        "FAILED", result.id, "retrying", ValueError)  # Django's log line gets the traceback


def test_a_raising_django_receiver_does_not_undo_the_outcome(i3settings):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    i3settings(force_sync=True)
    api_signals.task_finished.connect(broken)
    try:
        result = api_tasks.api_add.enqueue(7, 8)
    finally:
        api_signals.task_finished.disconnect(broken)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 15


# --- 2. a return value JSON cannot hold -------------------------------------------------------


def test_a_value_json_cannot_hold_fails_an_api_task_and_is_a_repr_for_task_decorator(
        i3settings):
    i3settings(force_sync=True)
    result = api_tasks.api_returns_set.enqueue("x")
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    (error,) = result.errors
    assert error.exception_class is TypeError and "Unsupported type" in error.traceback
    # @TaskDecorator keeps its documented behaviour: a success, recorded as the repr.
    execution = tasks.returns_object.delay("x").task_execution
    assert execution.status == ExecutionStatus.SUCCESS
    assert execution.result.is_repr and execution.result.value == "{1, 2}"


def test_api_return_values_are_normalised_as_django_does(i3settings):
    i3settings(force_sync=True)
    result = api_tasks.api_heavy.enqueue(("a", "b"))  # returns its argument
    assert result.args == [["a", "b"]] and result.return_value == ["a", "b"]


# --- 3. an alias's OPTIONS with using(backend=...) --------------------------------------------


def test_an_alias_max_retries_applies_with_using_backend(i3settings):
    i3settings(force_sync=True)
    once = api_tasks.api_fails.enqueue("a")  # "default": MAX_RETRIES=0
    twice = api_tasks.api_fails.using(backend="retrying").enqueue("b")  # MAX_RETRIES=1
    assert (once.attempts, twice.attempts) == (1, 2)
    assert (tasks.CALLS["api_fails:a"], tasks.CALLS["api_fails:b"]) == (1, 2)
    assert TaskExecution.objects.get(uuid=twice.id).max_retries == 1
    assert registry.get("tests.testapp.api_tasks.api_fails").max_retries == 0  # unchanged


# --- 4. SystemExit is a failed try, on every path ---------------------------------------------


def assert_failed_by_system_exit(result: Any, tag: str) -> None:
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    (error,) = result.errors
    assert error.exception_class is SystemExit
    assert error.traceback.endswith(f"SystemExit: api exit {tag}\n")
    (task_try,) = TaskExecutionTry.objects.filter(execution__uuid=result.id)
    assert (task_try.status, task_try.claims, task_try.lease_expires_at) == ("failed", 1, None)
    assert tasks.CALLS[f"api_exits:{tag}"] == 1


def test_system_exit_inline_is_a_failed_try_and_does_not_escape(i3settings):
    i3settings(force_sync=True)
    result = api_tasks.api_exits.enqueue("inline")
    assert_failed_by_system_exit(result, "inline")


def test_system_exit_through_push_is_failed_at_once_without_a_lease_wait(
        push_queue, i3settings, api_events):
    """Before, the push request died with the exception and the try stayed claimed until its
    lease (600 s here) ran out; now the first delivery records it and is acknowledged."""
    i3settings(lease_seconds=600)
    result = api_tasks.api_exits.enqueue("push")
    transport.flush()
    wait_for(lambda: finished(result), timeout=30)  # far less than the lease
    time.sleep(2)  # room for a (wrong) redelivery
    result.refresh()
    assert_failed_by_system_exit(result, "push")
    assert [(e.name, e.status) for e in api_events if e.name != "enqueued"] == [
        ("started", "RUNNING"), ("finished", "FAILED")]


def test_system_exit_on_the_pull_worker_is_a_failed_try(pubsub, i3settings):
    from django_i3tasks.provisioning import ensure_pubsub
    from django_i3tasks.types import PullQueue
    from django_i3tasks.worker import Worker, WorkerOptions

    i3settings(other_queues=(PullQueue("heavy", "pull", ack_deadline_seconds=10),),
               lease_seconds=600)
    ensure_pubsub()
    result = api_tasks.api_exits.using(queue_name="heavy").enqueue("pull")
    transport.flush()

    class Quiet:
        def write(self, text: str) -> None:
            pass

        def flush(self) -> None:
            pass

    worker = Worker(WorkerOptions(queue_name="heavy", concurrency=1, status_interval=0.5),
                    out=Quiet())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: finished(result), timeout=30)
    finally:
        worker.stop("test")
        thread.join(30)
    assert not thread.is_alive()
    assert_failed_by_system_exit(result, "pull")
    assert worker.stats.counts["failed"] == 1


# --- 5. results keep using() ---------------------------------------------------------------


def test_get_result_and_refresh_keep_queue_alias_and_run_after(no_publish):
    when = timezone.now() + timedelta(hours=1)
    variant = api_tasks.api_add.using(queue_name="heavy", backend="retrying", run_after=when)
    result = variant.enqueue(1, 1)
    again = variant.get_result(result.id)
    assert again.task == variant and again == result
    assert (again.backend, again.task.backend, again.task.queue_name, again.task.run_after) == (
        "retrying", "retrying", "heavy", when)
    result.refresh()
    assert result.task == variant


# --- 6. and 7. Django's messages first ---------------------------------------------------------


def test_invalid_arguments_give_djangos_message_then_ours():
    with pytest.raises(TypeError) as caught:
        api_tasks.api_add.enqueue(datetime.now(), 1)
    assert isinstance(caught.value, ArgumentsNotSerializable)
    text = str(caught.value)
    assert text.startswith("Unsupported type: <class 'datetime.datetime'>")
    assert "positional argument 0 of tests.testapp.api_tasks.api_add is not JSON" in text
    assert not TaskExecution.objects.exists()


class PrioritisedBackend(PubSubBackend):
    """A project's subclass that accepts priorities (and ignores them)."""

    supports_priority = True


def test_priority_is_refused_by_djangos_own_check(settings):
    assert PubSubBackend.supports_priority is False
    with pytest.raises(InvalidTask) as caught:
        api_tasks.api_add.using(priority=1)
    assert str(caught.value).startswith("Backend does not support setting priority of tasks.")
    # No check of our own: a subclass that declares support is not refused.
    settings.TASKS = {**settings.TASKS, "prioritised": {
        "BACKEND": f"{__name__}.PrioritisedBackend", "QUEUES": ["default"]}}
    assert api_tasks.api_add.using(backend="prioritised", priority=7).priority == 7
