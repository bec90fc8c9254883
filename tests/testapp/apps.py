from django.apps import AppConfig
from django.conf import settings


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"

    def ready(self) -> None:
        # The Django tasks API's tasks are imported at startup, as a project's server would
        # (a task registered later could not be enqueued through Pub/Sub), where the aliases
        # they use are configured (tests/settings.py; not Django's own suite's settings).
        if {"default", "retrying"} <= set(getattr(settings, "TASKS", None) or {}):
            from . import api_tasks  # noqa: F401
