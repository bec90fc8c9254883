"""pytest fixtures for projects that use django-i3tasks.

Enable them in your ``conftest.py``::

    pytest_plugins = ["django_i3tasks.testing.fixtures"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .recorder import TaskRecorder


@pytest.fixture
def task_recorder(db: None) -> Iterator[TaskRecorder]:
    """Tasks enqueued during the test are recorded instead of published (needs the
    database: the executions are written as usual)."""
    # Imported here: this plugin module may be loaded before Django is set up.
    from .recorder import recording

    with recording() as recorder:
        yield recorder
