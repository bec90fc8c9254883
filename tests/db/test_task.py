"""The task API: registration, inline calls, argument validation, force_sync."""

import pytest

from django_i3tasks.models import ExecutionStatus, TaskExecution, TaskExecutionTry
from tests.testapp import tasks


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, kwargs, named",
    [
        ((object(),), {}, "positional argument 0"),
        ((1, {1, 2}), {}, "positional argument 1"),
        ((), {"when": __import__("datetime").datetime(2020, 1, 1)}, "keyword argument 'when'"),
        ((float("nan"),), {}, "positional argument 0"),
    ],
)
def test_non_json_arguments_raise_before_anything_is_written(args, kwargs, named):
    with pytest.raises(TypeError, match=named):
        tasks.add.delay(*args, **kwargs)
    assert TaskExecution.objects.count() == 0 and TaskExecutionTry.objects.count() == 0


@pytest.mark.django_db
def test_oversized_payload_is_refused(i3settings):
    i3settings(max_payload_bytes=100)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        tasks.add.delay("x" * 200, 1)
    assert TaskExecution.objects.count() == 0


@pytest.mark.django_db
def test_force_sync_runs_delay_inline(i3settings):
    i3settings(force_sync=True)
    handle = tasks.add.delay(20, 22)
    execution = handle.task_execution
    assert execution.status == ExecutionStatus.SUCCESS
    assert execution.result.value == 42
    assert handle.id == execution.pk and handle.uuid == execution.uuid
    assert tasks.CALLS["add:20:22"] == 1


@pytest.mark.django_db
def test_force_sync_retries_then_fails(i3settings):
    i3settings(force_sync=True)
    execution = tasks.always_fails.delay("sync").task_execution
    assert execution.status == ExecutionStatus.FAILED
    assert tasks.CALLS["always_fails:sync"] == 3
    tries = list(execution.tries.order_by("number"))
    assert [t.status for t in tries] == ["failed"] * 3
    assert all(t.error_type == "builtins.ValueError" and "boom sync" in t.traceback
               for t in tries)


@pytest.mark.django_db
def test_non_json_result_is_recorded_as_repr(i3settings):
    i3settings(force_sync=True)
    execution = tasks.returns_object.delay("r").task_execution
    assert execution.status == ExecutionStatus.SUCCESS
    assert execution.result.is_repr and execution.result.value == "{1, 2}"


@pytest.mark.django_db
def test_bind_metadata_when_enqueued(i3settings):
    i3settings(force_sync=True)
    execution = tasks.whoami.delay("m").task_execution
    value = execution.result.value
    assert value == {"task": "tests.testapp.tasks.whoami", "try": 1,
                     "execution": str(execution.uuid), "queue": "default"}


@pytest.mark.django_db
def test_unknown_queue_is_an_error():
    with pytest.raises(Exception, match="Unknown i3tasks queue 'nope'"):
        tasks.add.apply_async(args=(1, 2), queue_name="nope")
    assert TaskExecution.objects.count() == 0
