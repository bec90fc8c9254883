"""Record enqueued tasks instead of publishing them, then run them: like Django's
``mail.outbox``, for a project's own tests.

::

    from django_i3tasks.testing import recording

    def test_signup_sends_welcome(db):
        with recording() as tasks:
            signup("ada@example.com")
        assert [t.task_name for t in tasks.enqueued] == ["accounts.tasks.send_welcome"]
        tasks.run()                       # runs it, and whatever it enqueues, until none left

Inside the block every ``.delay()``, ``.map()``, ``.then()`` release, group callback and
retry is written to the database as usual, but its message is kept instead of going to
Pub/Sub. It works inside the transaction pytest-django's ``db`` fixture wraps a test in (which
never commits): a call whose rows a rollback removed is dropped from the records, as a real
publish after commit would never have happened. ``run()`` runs the kept
messages with the same runner as the push view, so claims, retries (without backoff), chains,
groups and ``on_success`` behave as in production. Delayed calls (``countdown``/``eta``) are
recorded with their ``eta`` and released by ``run()`` without waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from .. import lifecycle, outbox
from ..exceptions import I3TasksError
from ..models import TaskExecution, TaskExecutionTry, TaskGroup
from ..outcome import Outcome


@dataclass(frozen=True)
class EnqueuedTask:
    """One recorded call: what would have been published (or, with ``eta``, scheduled)."""

    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue_name: str
    execution_uuid: UUID
    #: 1 for a first try, more for a retry; ``None`` for a delayed call not released yet.
    try_number: int | None
    #: When a delayed call (``countdown``/``eta``) is due; ``None`` otherwise.
    eta: datetime | None
    group_id: int | None

    @property
    def group(self) -> TaskGroup | None:
        """The group this call is a member of (read from the database)."""
        return None if self.group_id is None else TaskGroup.objects.get(pk=self.group_id)

    @classmethod
    def of(cls, record: outbox.Recorded) -> EnqueuedTask:
        return cls(
            task_name=record.task_name, args=record.args, kwargs=record.kwargs,
            queue_name=record.queue_name, execution_uuid=record.execution_uuid,
            try_number=record.try_number, eta=record.eta, group_id=record.group_id,
        )


class RunawayTasks(I3TasksError):
    """``TaskRecorder.run()`` ran more rounds than allowed: tasks keep enqueueing tasks."""


class TaskRecorder:
    """What ``recording()`` yields: the recorded calls, and ``run()`` to run them."""

    def __init__(self) -> None:
        self._outbox = outbox.RecordingOutbox()
        self._taken = 0

    @property
    def enqueued(self) -> list[EnqueuedTask]:
        """Every call recorded so far (retries included), in order."""
        self._forget_rolled_back()
        return [EnqueuedTask.of(record) for record in self._outbox.records]

    @property
    def pending(self) -> list[EnqueuedTask]:
        """Recorded calls that ``run()`` has not run yet."""
        self._forget_rolled_back()
        return [EnqueuedTask.of(record) for record in self._outbox.records[self._taken:]]

    def clear(self) -> None:
        self._outbox.records.clear()
        self._taken = 0

    def _forget_rolled_back(self) -> None:
        """Drop the records whose try (or, for a delayed call, execution) no longer exists."""
        records = self._outbox.records
        tries = {r.message.try_id for r in records if r.message is not None}
        delayed = {r.execution_id for r in records if r.message is None}
        tries &= set(TaskExecutionTry.objects.filter(pk__in=tries).values_list("pk", flat=True))
        delayed &= set(TaskExecution.objects.filter(pk__in=delayed).values_list("pk", flat=True))
        kept = [
            r for r in records
            if (r.message.try_id in tries if r.message is not None else r.execution_id in delayed)
        ]
        kept_ids = {id(r) for r in kept}
        self._taken -= sum(1 for r in records[:self._taken] if id(r) not in kept_ids)
        records[:] = kept

    def run(self, *, max_rounds: int = 10_000) -> list[Outcome]:
        """Run the pending calls, and what they enqueue, until none are left; the outcomes
        of the messages run, in order. Delayed calls are released at once."""
        outcomes: list[Outcome] = []
        self._forget_rolled_back()
        with outbox.use(self._outbox):
            for _ in range(max_rounds):
                if self._taken >= len(self._outbox.records):
                    return outcomes
                record = self._outbox.records[self._taken]
                self._taken += 1
                if record.message is None:  # a delayed call: release it now
                    lifecycle.release([record.execution_id])
                else:
                    outcomes.append(self._outbox.run(record))
        raise RunawayTasks(f"still enqueueing after {max_rounds} tasks; is there a loop?")


@contextmanager
def recording() -> Iterator[TaskRecorder]:
    """Record every task enqueued inside the block (in every thread) instead of publishing."""
    recorder = TaskRecorder()
    with outbox.use(recorder._outbox):
        yield recorder
