"""The push view under Django's ASGI handler (``AsyncClient``, in-process): an async task runs on
the server's event loop."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import push_envelope
from tests.testapp import control_tasks as ct

pytestmark = pytest.mark.django_db(transaction=True)


def close_async_connection() -> None:
    """Close the connection of asgiref's sync thread (the async handler reads through it)."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(lambda: connections.close_all())())


def test_an_async_task_runs_from_the_push_view_under_asgi(no_publish):
    """Django's ASGI handler (``AsyncClient``) serving the push view: the async task runs on
    the server's event loop."""
    from django.test import AsyncClient

    from django_i3tasks.models import TaskExecution
    from tests.helpers import message_of

    handle = ct.async_add.delay(4, 5)
    execution = TaskExecution.objects.get(pk=handle.id)
    data, attributes = message_of(execution).encode()
    response = asyncio.run(AsyncClient().post(
        "/i3/tasks-push/", push_envelope(data, attributes), content_type="application/json"
    ))
    close_async_connection()
    assert response.status_code == 200 and response.json()["status"] == "success"
    assert handle.get_result().return_value == 9
