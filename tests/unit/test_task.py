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
