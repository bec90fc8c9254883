"""Signals where projects hook in (Sentry, metrics, audit logs) without patching the package.

Each is sent with the ``Task`` as ``sender`` (``None`` when the task is not registered in this
process), so ``@receiver(task_finished, sender=my_task)`` listens to one task only.

- ``task_enqueued``: an execution was handed to the transport (after the transaction that
  wrote it committed): at ``.delay()``, or when a chain step, a group callback or a delayed
  task is released. Once per execution. Keyword arguments: ``execution_uuid``,
  ``execution_id``, ``task_name``, ``queue_name``, ``group_id``.
- ``task_started``: a try was claimed and is about to run: once per claim (a try runs again
  only when its worker died and its lease expired). ``execution_uuid``, ``execution_id``,
  ``task_name``, ``queue_name``, ``try_number``, ``due_at`` (when the try was due, read by
  the claim itself; ``None`` on databases without ``RETURNING``).
- ``task_finished``: a try's outcome was recorded, inside the recording transaction (a
  receiver that writes to the database writes atomically with it; one that raises rolls the
  outcome back, so keep receivers short and careful). Only while no project receiver is
  connected may a plain success be recorded without a transaction (see
  ``package_receivers_only``). ``execution_uuid``, ``execution_id``,
  ``task_name``, ``queue_name``, ``try_number``, ``status`` (``"success"``,
  ``"retry_scheduled"``, ``"failed"`` or ``"cancelled"``: a running try that raised
  ``TaskCancelled`` or failed after a cancel request), ``duration`` (seconds),
  ``error_type`` and ``error_message`` (empty on success), ``retry_in`` (seconds, on
  ``"retry_scheduled"``). An execution cancelled or expired *before* it started sends no
  ``task_finished``: no try started (there was no ``task_started`` either).

- ``publish_failed``: Pub/Sub did not accept a message (the recovery sweep republishes it
  later). Sent from the publisher's callback thread. ``execution_uuid``, ``task_name``,
  ``queue_name``, ``try_number``, ``error_type``.

Duplicate deliveries send nothing: signals follow the state changes, which happen once.

The lifecycle emits values (the executions it wrote, the message of a try and its outcome)
through ``enqueued``, ``started`` and ``finished``; this module resolves the sender from the
registry, so the lifecycle never looks a task up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from .messages import TaskMessage
from .registry import registry

task_enqueued = Signal()
task_started = Signal()
task_finished = Signal()
publish_failed = Signal()

#: The ``dispatch_uid`` prefix of the package's own receivers (``logs``): they write nothing
#: and do not raise, so they need no transaction around them.
PACKAGE_UID = "django_i3tasks."


def package_receivers_only(signal: Signal) -> bool:
    """Whether every receiver of ``signal`` is one of the package's own. The lifecycle then
    records a plain success without a transaction (a project receiver is promised one).

    Reads ``Signal.receivers``, whose entries start with ``(dispatch_uid or receiver id,
    sender id)`` in every supported Django; anything else counts as a project receiver."""
    try:
        return all(
            isinstance(entry[0][0], str) and entry[0][0].startswith(PACKAGE_UID)
            for entry in signal.receivers
        )
    except (TypeError, IndexError):
        return False


def enqueued(messages: Sequence[TaskMessage], *, at_once: bool = False) -> None:
    """``task_enqueued`` for the execution of each message (its try just written), after
    the transaction commits; ``at_once`` for an outbox that runs messages before the commit.
    Messages carry every argument, so a bulk enqueue builds no model instances for it."""
    if not task_enqueued.has_listeners():
        return

    def send() -> None:
        for message in messages:
            task_enqueued.send(
                sender=registry.get(message.task_name),
                execution_uuid=message.execution_uuid, execution_id=message.execution_id,
                task_name=message.task_name, queue_name=message.queue_name,
                group_id=message.group_id,
            )

    _now_or_on_commit(send, at_once)


def _now_or_on_commit(send: Callable[[], None], at_once: bool) -> None:
    if at_once:
        send()
    else:
        transaction.on_commit(send)


def _event(message: TaskMessage) -> dict[str, Any]:
    return {
        "execution_uuid": message.execution_uuid, "execution_id": message.execution_id,
        "task_name": message.task_name, "queue_name": message.queue_name,
        "try_number": message.try_number,
    }


def started(message: TaskMessage, due_at: Any = None) -> None:
    """``task_started`` for the try of ``message`` (just claimed); ``due_at`` is when it was
    due (its backoff's end), when the claim could read it."""
    if task_started.has_listeners():
        task_started.send(sender=registry.get(message.task_name), **_event(message),
                          due_at=due_at)


def finished(message: TaskMessage, status: str, duration: float, *, error_type: str = "",
             error_message: str = "", retry_in: float | None = None,
             return_value: Any = None) -> None:
    """``task_finished`` for the try of ``message``, whose outcome was just recorded."""
    if task_finished.has_listeners():
        task_finished.send(
            sender=registry.get(message.task_name), **_event(message), status=status,
            duration=duration, error_type=error_type, error_message=error_message,
            retry_in=retry_in, return_value=return_value,
        )
