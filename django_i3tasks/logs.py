"""The package's own per-task log lines, as receivers of its signals.

Connected when Django is ready (``apps``). A project that wants other lines, metrics or error
reports connects its own receivers to ``django_i3tasks.signals`` the same way. Arguments and
return values are only ever logged at DEBUG.
"""

from __future__ import annotations

import logging
from typing import Any

from . import signals

logger = logging.getLogger("django_i3tasks.tasks")


def on_started(sender: Any, *, task_name: str, execution_uuid: Any, try_number: int,
               **_: Any) -> None:
    logger.info("Running %s (execution %s, try %s)", task_name, execution_uuid, try_number)


def on_finished(sender: Any, *, task_name: str, execution_uuid: Any, try_number: int,
                status: str, duration: float, error_type: str, retry_in: float | None,
                return_value: Any = None, **_: Any) -> None:
    if status == "success":
        logger.info("Task %s succeeded (execution %s, try %s, %.3f s)",
                    task_name, execution_uuid, try_number, duration)
        logger.debug("Task %s returned %r", task_name, return_value)
    elif status == "retry_scheduled":
        logger.warning("Task %s failed (execution %s, try %s, %s); retrying in %.1f s",
                       task_name, execution_uuid, try_number, error_type, retry_in or 0.0)
    else:
        logger.error("Task %s failed for good (execution %s, try %s, %s)",
                     task_name, execution_uuid, try_number, error_type)


def connect() -> None:
    signals.task_started.connect(on_started, dispatch_uid="django_i3tasks.logs.started")
    signals.task_finished.connect(on_finished, dispatch_uid="django_i3tasks.logs.finished")
