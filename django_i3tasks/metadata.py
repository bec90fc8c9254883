"""What a running task knows about its try: ``TaskMetadata`` (given to ``bind=True`` tasks as
``task_metadata=``) and the claim behind it, ``RunningTry``, through which the task reports
progress and learns of a cancel request.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid as uuid_module
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from . import lifecycle
from .exceptions import TaskUsageError
from .spec import is_number


class RunningTry:
    """The claim of the try a task is running: what ``set_progress`` and ``is_cancelled``
    of its ``TaskMetadata`` use.

    Progress is written at most every ``PROGRESS_INTERVAL`` seconds; a value held back is
    written with the next one, or when the try's outcome is recorded (same ``UPDATE``). The
    cancel flag is read at most every ``CANCEL_INTERVAL`` seconds, and once true stays true.
    """

    PROGRESS_INTERVAL = 0.25
    CANCEL_INTERVAL = 0.5

    def __init__(self, execution_id: int, try_id: int, token: uuid_module.UUID) -> None:
        self.execution_id = execution_id
        self.try_id = try_id
        self.token = token
        self._written_at = -math.inf
        self._held: dict[str, Any] | None = None
        self._checked_at = -math.inf
        self._cancelled = False

    def progress(self, value: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._written_at < self.PROGRESS_INTERVAL:
            self._held = value
            return
        self._written_at, self._held = now, None
        lifecycle.write_progress(self.try_id, self.token, value)

    def held_progress(self) -> dict[str, Any] | None:
        """The latest progress not written yet (recorded with the try's outcome)."""
        return self._held

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= self.CANCEL_INTERVAL:
            self._checked_at = now
            self._cancelled = lifecycle.cancel_requested(self.execution_id)
        return self._cancelled


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class TaskMetadata:
    """What a ``bind=True`` task receives as ``task_metadata=``.

    ``execution_uuid`` is ``None`` for a plain inline call (``task(...)``/``.sync_run()``);
    there ``set_progress`` does nothing and ``is_cancelled`` is False.
    """

    task_name: str
    queue_name: str
    execution_uuid: UUID | None = None
    execution_id: int | None = None
    try_number: int = 1
    max_retries: int = 0
    group_id: int | None = None
    running: RunningTry | None = field(default=None, repr=False, compare=False)

    def set_progress(self, current: float, total: float | None = None, message: str = "") -> None:
        """Report progress (``TaskResult.progress``, the status endpoint, the admin).

        Cheap to call often: at most a few writes a second reach the database, and only
        while this try holds its claim. In an ``async def`` task use ``aset_progress``.
        """
        value = _progress_value(current, total, message)
        if self.running is None:
            return
        if _in_event_loop():
            raise TaskUsageError("in an async def task use 'await task_metadata.aset_progress()'")
        self.running.progress(value)

    async def aset_progress(self, current: float, total: float | None = None,
                            message: str = "") -> None:
        """``set_progress`` for ``async def`` tasks."""
        from asgiref.sync import sync_to_async

        value = _progress_value(current, total, message)
        if self.running is not None:
            await sync_to_async(self.running.progress)(value)

    def is_cancelled(self) -> bool:
        """True once ``cancel()`` was called for this execution: stop early (return, or
        raise ``TaskCancelled`` to record it as cancelled). In an ``async def`` task use
        ``ais_cancelled``."""
        if self.running is None:
            return False
        if _in_event_loop():
            raise TaskUsageError("in an async def task use 'await task_metadata.ais_cancelled()'")
        return self.running.cancelled()

    async def ais_cancelled(self) -> bool:
        """``is_cancelled`` for ``async def`` tasks."""
        from asgiref.sync import sync_to_async

        if self.running is None:
            return False
        return await sync_to_async(self.running.cancelled)()


def _progress_value(current: Any, total: Any, message: Any) -> dict[str, Any]:
    if not is_number(current):
        raise TaskUsageError(f"set_progress: current must be a number, got {current!r}")
    if total is not None and not is_number(total):
        raise TaskUsageError(f"set_progress: total must be None or a number, got {total!r}")
    if not isinstance(message, str):
        raise TaskUsageError(f"set_progress: message must be a str, got {message!r}")
    return {"current": current, "total": total, "message": message[:1000]}
