"""A pytest plugin for projects that use django-i3tasks: a real Pub/Sub emulator for their
integration tests.

Enable it in the project's ``conftest.py`` with
``pytest_plugins = ["django_i3tasks.testing.pytest_plugin"]``, then ask for the session
fixture ``i3tasks_pubsub``: an emulator started once per test session (the Python one, or
Google's when ``I3TASKS_EMULATOR`` says so or ``auto`` finds it), with
``PUBSUB_EMULATOR_HOST`` pointing at it until the session ends, so ``.delay()``,
``i3tasks_ensure_pubsub`` and Google's clients all use it. For unit tests that need no
Pub/Sub at all, ``force_sync=True`` remains the lighter choice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .emulator import PubSubEmulator, emulated_pubsub


@pytest.fixture(scope="session")
def i3tasks_pubsub() -> Iterator[PubSubEmulator]:
    """A running emulator (``.endpoint``, ``.kind``) for the whole session."""
    with emulated_pubsub() as emulator:
        try:
            yield emulator
        finally:
            from django_i3tasks import transport

            transport.flush()  # what is still batched leaves before the emulator stops
