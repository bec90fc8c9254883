"""Test settings with ``run_queue_create_command_on_startup=True`` (subprocess tests)."""

import dataclasses

from tests.settings import *  # noqa: F403
from tests.settings import I3TASKS

I3TASKS = dataclasses.replace(I3TASKS, run_queue_create_command_on_startup=True)
