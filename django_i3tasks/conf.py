"""Reading ``settings.I3TASKS`` and ``settings.PUBSUB_CONFIG``.

Nothing is cached here: both are a few attribute look-ups, and tests that use
``override_settings`` see their values at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .exceptions import UnknownQueue
from .types import AnyQueue, I3TasksSettings

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


def get_settings() -> I3TasksSettings:
    value = getattr(settings, "I3TASKS", None)
    if not isinstance(value, I3TasksSettings):
        raise ImproperlyConfigured(
            "settings.I3TASKS must be a django_i3tasks.types.I3TasksSettings "
            f"(got {type(value).__name__}); run 'manage.py check' for details."
        )
    return value


def get_queue(queue_name: str | None = None) -> AnyQueue:
    """The queue named ``queue_name`` (the default queue for ``None``)."""
    conf = get_settings()
    if queue_name is None:
        return conf.default_queue
    for queue in conf.queues:
        if queue.queue_name == queue_name:
            return queue
    raise UnknownQueue(
        f"Unknown i3tasks queue {queue_name!r}; configured: "
        f"{', '.join(q.queue_name for q in conf.queues)}. Add it to I3TASKS.other_queues."
    )


def topic_id(queue: AnyQueue) -> str:
    return f"{get_settings().namespace}.{queue.queue_name}"


def subscription_id(queue: AnyQueue) -> str:
    return f"{topic_id(queue)}.{queue.subscription_name}"


@dataclass(frozen=True)
class PubSubConfig:
    """``settings.PUBSUB_CONFIG``, parsed.

    ``emulator_host`` is the ``PUBSUB_EMULATOR_HOST`` environment variable when set (as for
    Google's own clients), else ``HOST`` when ``EMULATOR`` is true. ``credentials_file`` is a
    service-account JSON path; ``None`` means Application Default Credentials.
    """

    project_id: str
    emulator_host: str | None
    credentials_file: str | None

    def topic_path(self, queue: AnyQueue) -> str:
        return f"projects/{self.project_id}/topics/{topic_id(queue)}"

    def subscription_path(self, queue: AnyQueue) -> str:
        return f"projects/{self.project_id}/subscriptions/{subscription_id(queue)}"


def pubsub_config() -> PubSubConfig:
    raw = getattr(settings, "PUBSUB_CONFIG", None)
    if not isinstance(raw, dict):
        raise ImproperlyConfigured("settings.PUBSUB_CONFIG must be a dict; see 'manage.py check'.")
    project_id = raw.get("PROJECT_ID")
    if not isinstance(project_id, str) or not project_id:
        raise ImproperlyConfigured("settings.PUBSUB_CONFIG['PROJECT_ID'] must be a non-empty str.")
    emulator_host = os.environ.get(EMULATOR_ENV) or (
        raw.get("HOST") if raw.get("EMULATOR") else None
    )
    credentials = raw.get("CREDENTIALS") or None
    if emulator_host:
        credentials = None
    return PubSubConfig(
        project_id=project_id,
        emulator_host=emulator_host or None,
        credentials_file=str(credentials) if credentials else None,
    )
