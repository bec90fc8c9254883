"""django_i3tasks.testing: the recording outbox and its runner, as a project's tests use it.

The first test is the example of docs/testing.md, word for word (a test below keeps them
equal).
"""

# --- docs example (begin) ---
import pytest

from django_i3tasks import TaskGroup
from django_i3tasks.testing import recording
from tests.testapp.chain_tasks import link, member
from tests.testapp.tasks import CALLS


@pytest.mark.django_db
def test_recorded_chain_and_group_run_to_the_end():
    with recording() as tasks:
        link.delay("fetch").then(link, "parse")
        group = TaskGroup.create(callback=link.build_chain("joined"), total_count=2)
        member.map([1, 2], group=group)

    # Only what can run now was enqueued: the chain's next step and the group's callback
    # wait for what comes before them.
    assert [(t.task_name, t.args) for t in tasks.enqueued] == [
        ("tests.testapp.chain_tasks.link", ["fetch"]),
        ("tests.testapp.chain_tasks.member", [1]),
        ("tests.testapp.chain_tasks.member", [2]),
    ]
    assert all(t.group_id == group.id for t in tasks.enqueued[1:])

    tasks.run()  # runs them, and what they release, until nothing is left

    assert [t.args for t in tasks.enqueued[3:]] == [["parse"], ["joined"]]
    assert CALLS["link:parse"] == 1 and CALLS["link:joined"] == 1
    group.refresh_from_db()
    assert group.status == "success"
# --- docs example (end) ---


def test_docs_show_the_example_as_it_runs():
    import re
    from pathlib import Path

    source = Path(__file__).read_text()
    example = re.search(r"# --- docs example \(begin\) ---\n(.*?)# --- docs example \(end",
                        source, re.S).group(1).strip()
    page = (Path(__file__).parents[2] / "docs" / "testing.md").read_text()
    assert example in page


@pytest.mark.django_db
def test_recording_publishes_nothing_and_keeps_rows_like_production(monkeypatch):
    from django_i3tasks import transport
    from django_i3tasks.models import ExecutionStatus, TaskExecution

    def fail(*args, **kwargs):
        raise AssertionError("nothing may be published while recording")

    monkeypatch.setattr(transport, "publish_many", fail)
    with recording() as tasks:
        handle = link.delay("a")
    execution = TaskExecution.objects.get(pk=handle.id)
    assert execution.status == ExecutionStatus.PENDING and execution.tries.count() == 1
    assert [t.execution_uuid for t in tasks.pending] == [handle.uuid]
    tasks.run()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.SUCCESS and tasks.pending == []


@pytest.mark.django_db
def test_rolled_back_calls_are_not_recorded():
    from django.db import transaction

    with recording() as tasks:
        with pytest.raises(RuntimeError), transaction.atomic():
            link.delay("rolled back")
            raise RuntimeError("abort")
    assert tasks.enqueued == []


@pytest.mark.django_db
def test_retries_run_without_backoff_and_failures_fail_the_group():
    from tests.testapp.chain_tasks import member_fails

    with recording() as tasks:
        group = TaskGroup.create(callback=link.build_chain("never"), total_count=1)
        member_fails.delay(7, __i3group__=group)
    tasks.run()
    assert [t.try_number for t in tasks.enqueued] == [1, 2]  # max_retries=1
    assert CALLS["member_fails:7"] == 2 and CALLS["link:never"] == 0
    group.refresh_from_db()
    assert group.status == "failed"


@pytest.mark.django_db
def test_delayed_calls_are_recorded_with_their_eta_and_released_by_run():
    with recording() as tasks:
        handle = link.apply_async(args=["later"], countdown=3600)
    (call,) = tasks.enqueued
    assert call.eta is not None and call.try_number is None
    assert call.execution_uuid == handle.uuid
    tasks.run()
    assert CALLS["link:later"] == 1


def test_fixture_records(task_recorder):
    link.delay("fixture")
    assert [t.args for t in task_recorder.pending] == [["fixture"]]
    task_recorder.run()
    assert CALLS["link:fixture"] == 1
