"""Tasks of the task-control tests (issue 12): waiting, progress, cancel, time limits, retry
policy, expiry, unique keys, async tasks. Runs are counted in ``tasks.CALLS``."""

from __future__ import annotations

import asyncio
import os
import time

from django_i3tasks import TaskCancelled, TaskDecorator
from tests.testapp.tasks import record


@TaskDecorator
def sleepy(tag: str, seconds: float) -> str:
    record(f"sleepy:{tag}")
    time.sleep(seconds)
    return f"{tag} after {seconds:g}s"


@TaskDecorator(max_retries=0)
def fails_at_once(tag: str) -> None:
    record(f"fails_at_once:{tag}")
    raise LookupError(f"nothing for {tag}")


@TaskDecorator(bind=True)
def counts_up(tag: str, steps: int, pause: float, task_metadata=None) -> int:
    record(f"counts_up:{tag}")
    for step in range(1, steps + 1):
        time.sleep(pause)
        task_metadata.set_progress(step, steps, f"step {step}")
    return steps


@TaskDecorator(time_limit=1, max_retries=1, retry_backoff=(0.1, 0.2))
def runs_too_long(tag: str) -> str:
    """Would take 10 s in short sleeps (Python code, so the limit interrupts it)."""
    record(f"runs_too_long:{tag}")
    for _ in range(100):
        time.sleep(0.1)
    record(f"runs_too_long:{tag}:finished")
    return tag


@TaskDecorator(time_limit=1, max_retries=0)
def swallows_the_limit(tag: str) -> str:
    """Catches the limit's exception and returns: still not a success."""
    record(f"swallows_the_limit:{tag}")
    try:
        for _ in range(100):
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - the point of the test
        pass
    return tag


@TaskDecorator(max_retries=3, give_up_on=(KeyError,))
def gives_up(tag: str) -> None:
    record(f"gives_up:{tag}")
    raise KeyError(tag)


@TaskDecorator(max_retries=3, retry_on=(ConnectionError,))
def retries_connection_errors(tag: str, error: str) -> None:
    """Raises ``error`` ("connection" or "value"): only the first kind is retried."""
    if record(f"retries_connection_errors:{tag}") == 1 or error == "value":
        raise ConnectionError(tag) if error == "connection" else ValueError(tag)


@TaskDecorator(bind=True, max_retries=3)
def stops_when_cancelled(tag: str, task_metadata=None) -> str:
    record(f"stops_when_cancelled:{tag}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if task_metadata.is_cancelled():
            record(f"stops_when_cancelled:{tag}:saw_cancel")
            raise TaskCancelled("asked to stop")
        time.sleep(0.05)
    return tag


@TaskDecorator
def noted(tag: str) -> str:
    record(f"noted:{tag}")
    return tag


@TaskDecorator(expires=0.5)
def expiring(tag: str) -> str:
    record(f"expiring:{tag}")
    return tag


@TaskDecorator
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.05)
    record(f"async_add:{a}:{b}")
    return a + b


@TaskDecorator(bind=True)
async def async_progress(tag: str, task_metadata=None) -> str:
    from tests.testapp.models import Effect

    await task_metadata.aset_progress(1, 2, "half")
    await Effect.objects.acreate(key=f"async_progress:{tag}", pid=os.getpid())
    record(f"async_progress:{tag}")
    return tag


@TaskDecorator(time_limit=1, max_retries=0)
async def async_too_long(tag: str) -> str:
    record(f"async_too_long:{tag}")
    await asyncio.sleep(10)
    record(f"async_too_long:{tag}:finished")
    return tag
