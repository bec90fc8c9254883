"""Signals where projects hook in (Sentry, metrics, audit logs) without patching the package.

Each is sent with the ``Task`` as ``sender`` (``None`` when the task is not registered in this
process), so ``@receiver(task_finished, sender=my_task)`` listens to one task only.

- ``task_enqueued``: an execution was handed to the transport (after the transaction that
  wrote it committed): at ``.delay()``, or when a chain step, a group callback or a delayed
  task is released. Once per execution. Keyword arguments: ``execution_uuid``,
  ``execution_id``, ``task_name``, ``queue_name``, ``group_id``.
- ``task_started``: a try was claimed and is about to run: once per claim (a try runs again
  only when its worker died and its lease expired). ``execution_uuid``, ``execution_id``,
  ``task_name``, ``queue_name``, ``try_number``.
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
"""

from __future__ import annotations

from django.dispatch import Signal

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
