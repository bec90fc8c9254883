"""Tasks written against Django's tasks API (``django.tasks`` on Django 6, the ``django-tasks``
backport before it), run by ``django_i3tasks.backends.PubSubBackend``.

Imported at startup by the test app (tests/testapp/apps.py) when an API is installed.
"""

import asyncio
import time

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task

from tests.testapp.tasks import record


@task
def api_add(a, b):
    record(f"api_add:{a}:{b}")
    return a + b


@task()
def api_fails(tag):
    record(f"api_fails:{tag}")
    raise ValueError(f"api boom {tag}")


@task(takes_context=True, backend="retrying")
def api_context(context, tag):
    """Fails on its first attempt; on the second, reports what its context says."""
    record(f"api_context:{tag}")
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "status": str(context.task_result.status),
        "errors": len(context.task_result.errors),
    }


@task
def api_slow(tag, seconds=0.5):
    record(f"api_slow:{tag}")
    time.sleep(seconds)
    return tag


@task
async def api_async_double(x):
    record(f"api_async_double:{x}")
    await asyncio.sleep(0)
    return 2 * x


@task(queue_name="heavy")
def api_heavy(tag):
    record(f"api_heavy:{tag}")
    return tag


@task
def api_returns_set(tag):
    """A value JSON cannot hold: Django's contract fails the task (``@TaskDecorator`` records
    its repr instead)."""
    record(f"api_returns_set:{tag}")
    return {tag}


@task
def api_exits(tag):
    record(f"api_exits:{tag}")
    raise SystemExit(f"api exit {tag}")
