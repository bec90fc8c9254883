"""A pytest plugin for projects that use django-i3tasks.

Enable it in the project's ``conftest.py`` with
``pytest_plugins = ["django_i3tasks.testing.pytest_plugin"]``. It offers:

- ``task_recorder``: tasks enqueued during the test are recorded instead of published, and
  ``task_recorder.run()`` runs them (``testing.recorder``); needs the database.
- ``i3tasks_pubsub``: a real Pub/Sub emulator for integration tests, started once per test
  session (the Python one, or Google's when ``I3TASKS_EMULATOR`` says so or ``auto`` finds
  it), with ``PUBSUB_EMULATOR_HOST`` pointing at it until the session ends, so ``.delay()``,
  ``i3tasks_ensure_pubsub`` and Google's clients all use it.

For unit tests that need no Pub/Sub at all, ``force_sync=True`` remains the lighter choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .emulator import PubSubEmulator, emulated_pubsub

if TYPE_CHECKING:
    from .recorder import TaskRecorder


@pytest.fixture
def task_recorder(db: None) -> Iterator[TaskRecorder]:
    """Tasks enqueued during the test are recorded instead of published (the executions
    are written as usual, hence the database)."""
    # Imported here: this plugin is loaded before Django is set up.
    from .recorder import recording

    with recording() as recorder:
        yield recorder


@pytest.fixture(scope="session")
def i3tasks_pubsub() -> Iterator[PubSubEmulator]:
    """A running emulator (``.endpoint``, ``.kind``) for the whole session."""
    with emulated_pubsub() as emulator:
        try:
            yield emulator
        finally:
            # Imported here: this plugin is loaded before Django is set up.
            from django_i3tasks import transport

            transport.flush()  # what is still batched leaves before the emulator stops
