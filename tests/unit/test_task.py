"""The task API without a database: registration, inline calls, the decorator's options."""

import pytest

from django_i3tasks.registry import registry
from django_i3tasks.task import Task, TaskDecorator
from tests.testapp import tasks


def test_decorated_functions_are_registered_by_dotted_path():
    assert registry.get("tests.testapp.tasks.add") is tasks.add
    assert isinstance(tasks.always_fails, Task)
    assert tasks.always_fails.max_retries == 2


def test_plain_call_and_sync_run_run_inline():
    assert tasks.add(2, 3) == 5
    assert tasks.add.sync_run(a=1, b=1) == 2


def test_bind_inline_gets_metadata_without_execution():
    result = tasks.whoami("x")
    assert result["task"] == "tests.testapp.tasks.whoami" and result["execution"] == "None"


def test_bare_and_configured_decorator():
    def f():
        return 1

    def g():
        return 2

    assert TaskDecorator(f).name.endswith("test_bare_and_configured_decorator.<locals>.f")
    configured = TaskDecorator(queue_name="heavy", max_retries=0)(g)
    assert configured.queue_name == "heavy" and configured.max_retries == 0


def test_on_success_must_be_a_task():
    with pytest.raises(TypeError, match="on_success"):
        TaskDecorator(on_success=print)(lambda: None)


def test_arguments_are_bound_by_shape_and_every_call_is_checked():
    """A call's fit is remembered per shape (count of positional arguments, keyword names);
    a misfit raises on every call of its shape, and other shapes are checked on their own."""
    import inspect

    from django_i3tasks.exceptions import TaskUsageError
    from django_i3tasks.spec import bind_arguments

    def two(a, b, *, c=0):
        pass

    signature = inspect.signature(two)
    for _ in range(2):
        bind_arguments("two", signature, [1, 2], {"c": 3})
        with pytest.raises(TaskUsageError, match="missing a required argument: 'b'"):
            bind_arguments("two", signature, [1], {})
        with pytest.raises(TaskUsageError, match="unexpected keyword argument 'd'"):
            bind_arguments("two", signature, [1, 2], {"d": 3})
        with pytest.raises(TaskUsageError, match="multiple values for argument 'a'"):
            bind_arguments("two", signature, [1, 2], {"a": 3})
    bind_arguments("two", signature, [], {"a": 1, "b": 2})
    with pytest.raises(TaskUsageError, match="given by the runner"):
        bind_arguments("two", signature, [1, 2], {"task_metadata": 1}, bound=True)
