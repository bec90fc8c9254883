"""What the adapted tests use where Django's read ``DummyBackend``'s in-memory store: the
store of ``PubSubBackend`` is rows, read with ``get_result``."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async

from django_i3tasks import outbox
from django_i3tasks.models import TaskExecution
from django_i3tasks.tasks_api import task_backends


def stored_results() -> list[Any]:
    """Every stored result, oldest first, read through the default backend."""
    backend = task_backends["default"]
    return [backend.get_result(str(execution_uuid)) for execution_uuid in
            TaskExecution.objects.order_by("pk").values_list("uuid", flat=True)]


async def astored_results() -> list[Any]:
    return await sync_to_async(stored_results)()


def clear_results() -> None:
    """Forget every result (and what the recording outbox kept)."""
    TaskExecution.objects.all().delete()
    sink = outbox.get_outbox()
    if isinstance(sink, outbox.RecordingOutbox):
        sink.records.clear()


def run_recorded() -> None:
    """Run what the recording outbox kept, as the push view would: the stored results
    change."""
    sink = outbox.get_outbox()
    assert isinstance(sink, outbox.RecordingOutbox), "the dummy module runs on the recording outbox"
    records, sink.records[:] = list(sink.records), []
    for record in records:
        if record.message is not None:
            sink.run(record)


async def arun_recorded() -> None:
    await sync_to_async(run_recorded)()
