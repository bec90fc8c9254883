"""Settings of the conformance runs: the test suite's, with the outbox of the run
(``I3TASKS_CONFORMANCE_OUTBOX``: ``inline`` for the modules of ImmediateBackend, the task API
and custom backends, ``recording`` for DummyBackend's) and ``PubSubBackend`` as the default
tasks backend, under which Django's test tasks are defined when their module is imported.

Django's backends run a task once: no retries here either (``default_max_retries=0``; a
project sets ``OPTIONS["MAX_RETRIES"]`` per alias). The queues the tests configure in
``QUEUES`` (``queue_1``, ``high``) are I3TASKS queues here, as ``PubSubBackend`` requires of a
project (check ``django_i3tasks.E104``).
"""

import dataclasses
import os

from django_i3tasks.types import PushQueue
from tests.settings import *  # noqa: F403
from tests.settings import I3TASKS as SUITE_I3TASKS

OUTBOX = os.environ.get("I3TASKS_CONFORMANCE_OUTBOX", "inline")

I3TASKS = dataclasses.replace(
    SUITE_I3TASKS,
    outbox=OUTBOX,
    default_max_retries=0,
    other_queues=(*SUITE_I3TASKS.other_queues, PushQueue("queue_1", "push"),
                  PushQueue("high", "push")),
)

TASKS = {"default": {"BACKEND": "django_i3tasks.backends.PubSubBackend"}}

# Our own warnings (a task failed, retrying) would drown the runner's output; Django's
# "django.tasks" logger, which the tests read, is left alone.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django_i3tasks": {"level": "CRITICAL", "propagate": False}},
}
