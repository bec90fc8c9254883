"""Helpers for testing projects that use django-i3tasks.

- ``recording()`` / ``TaskRecorder``: record enqueued tasks instead of publishing them, then
  run them (``recorder``).
- ``emulator``: a Pub/Sub emulator on a free port (Google's, or ours in Python: ``pubsub``),
  for integration tests and the demo.
- ``pytest_plugin``: the fixtures ``task_recorder`` and ``i3tasks_pubsub``.

Names are imported lazily: the emulator launcher runs before (or without) Django's setup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EnqueuedTask", "TaskRecorder", "recording"]

if TYPE_CHECKING:
    from .recorder import EnqueuedTask, TaskRecorder, recording


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import recorder as module

        return getattr(module, name)
    raise AttributeError(f"module 'django_i3tasks.testing' has no attribute {name!r}")
