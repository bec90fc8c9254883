from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger(__name__)

#: Management commands that serve traffic: only these (and WSGI/ASGI servers) provision
#: Pub/Sub at startup. migrate, check, test, makemigrations, shell... never touch the network.
SERVING_COMMANDS = {"runserver", "i3tasks_worker", "i3tasks_beat"}
#: Programs that never serve traffic although they set Django up outside manage.py.
NON_SERVING_PROGRAMS = {"pytest", "py.test"}


class I3TasksConfig(AppConfig):
    name = "django_i3tasks"
    verbose_name = "i3tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: modules that define or use models can only be
        # imported once the app registry is ready.
        from . import (
            checks,  # registers the system checks
            execution,
            logs,
            metrics,
            outbox,
            project_checks,  # noqa: F401 - registers the checks of the project's wiring
        )
        from .registry import autodiscover

        # The inline and recording outboxes run messages with the runner, which sits above
        # them: it is handed over here rather than imported by them.
        outbox.set_runner(execution.run_message)
        logs.connect()
        metrics.connect()  # only when the [metrics] extra is installed
        # Tasks registered from here until Django is ready are known to every process
        # (registry.known_at_startup).
        autodiscover()
        _import_task_modules()
        _install_bad_request_handler()
        if checks.uses_tasks_backend():
            # Django 6 registers its tasks check when django.tasks is imported (the backport
            # when its checks module is): importing the backend does it, so `manage.py check`
            # checks TASKS also in a project that defines no @task yet.
            try:
                from . import backends  # noqa: F401
            except ImportError:
                pass  # no tasks API installed: checks.check_tasks_backend says so
        if _is_serving():
            _provision_in_background()

    def create_group(self, *, callback: Any = None, total_count: int,
                     pass_results: bool = False, on_failure: Any = None) -> Any:
        """What ``TaskGroup.create`` does: the model reaches the public API through the app
        config, so the models module imports nothing above it."""
        from .groups import create_group

        return create_group(callback=callback, total_count=total_count,
                            pass_results=pass_results, on_failure=on_failure)


def _import_task_modules() -> None:
    """``I3TASKS.task_modules``: tasks outside the apps' ``tasks`` modules are registered in
    every process. A module that does not exist is left to the system check (E041), which
    names it; an error inside an existing module propagates, as in Django's autodiscovery."""
    from importlib import import_module
    from importlib.util import find_spec

    from django.conf import settings

    modules = getattr(getattr(settings, "I3TASKS", None), "task_modules", ())
    if isinstance(modules, str) or not isinstance(modules, tuple | list):
        return  # the system check says what is wrong
    for name in modules:
        try:
            exists = isinstance(name, str) and bool(name) and find_spec(name) is not None
        except (ImportError, ValueError):
            exists = False
        if exists:
            import_module(name)


def _install_bad_request_handler() -> None:
    """A Host outside ``ALLOWED_HOSTS`` is refused by Django's middleware with its HTML 400
    page, before any view runs. Where the project keeps Django's default handler, ours takes
    its place: JSON for the package's endpoints, Django's page for every other URL."""
    from django.conf import urls
    from django.views import defaults

    if urls.handler400 in (defaults.bad_request, "django.views.defaults.bad_request"):
        urls.handler400 = "django_i3tasks.views.bad_request"  # type: ignore[assignment]


def _is_serving() -> bool:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in NON_SERVING_PROGRAMS or os.environ.get("I3TASKS_SKIP_STARTUP_PROVISIONING"):
        return False
    if program in ("manage.py", "django-admin", "django-admin.py", "__main__.py"):
        command = sys.argv[1] if len(sys.argv) > 1 else ""
        # runserver's autoreloader runs ready() in the watcher and in the child: the child.
        if command == "runserver" and os.environ.get("RUN_MAIN") != "true" and \
                "--noreload" not in sys.argv:
            return False
        return command in SERVING_COMMANDS
    return True


def _provision_in_background() -> None:
    """``run_queue_create_command_on_startup``: ensure topics/subscriptions without ever
    blocking or crashing startup; an unreachable Pub/Sub is a logged warning."""
    from django.conf import settings

    from .types import I3TasksSettings

    conf = getattr(settings, "I3TASKS", None)
    if not isinstance(conf, I3TasksSettings) or not conf.run_queue_create_command_on_startup:
        return

    def run() -> None:
        from .provisioning import ensure_pubsub

        try:
            ensure_pubsub(timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - startup must survive an unreachable Pub/Sub
            logger.warning("django-i3tasks could not ensure Pub/Sub topics at startup: %s", exc)

    threading.Thread(target=run, name="i3tasks-provision", daemon=True).start()
