"""Settings of ``bench/logs.py``: the test suite's, with a production-like ``LOGGING``: one
root handler at INFO, a timestamp, the level and the logger's name on every line. Retries
wait 2-4 s, longer than a push takes to come back, as in production: a retry's message is
published at once and its first deliveries come too early (push: 503 ``not_due``)."""

import dataclasses

from tests.settings import *  # noqa: F403
from tests.settings import I3TASKS as _TESTS_I3TASKS

I3TASKS = dataclasses.replace(_TESTS_I3TASKS, retry_backoff_min_seconds=2.0,
                              retry_backoff_max_seconds=4.0)

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": FORMAT}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
