"""Typed settings objects for ``settings.I3TASKS``.

They are plain frozen dataclasses: building one never fails, so a bad value cannot crash an
import. Every field is validated by the Django system checks (``django_i3tasks.checks``), which
name the field and say why it is wrong.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any


@dataclass(frozen=True)
class _QueueBase:
    """What every queue has: names, and the subscription settings Pub/Sub applies."""

    queue_name: str
    subscription_name: str
    _: KW_ONLY
    ack_deadline_seconds: int = 60
    min_retry_backoff_seconds: int = 10
    max_retry_backoff_seconds: int = 600
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 5


@dataclass(frozen=True)
class PushQueue(_QueueBase):
    """A queue whose subscription pushes each message to the push view over HTTPS.

    ``push_endpoint`` is the public URL of ``tasks-push/``; ``i3tasks_ensure_pubsub`` writes it,
    the ack deadline and the retry policy into the subscription. The retry policy spaces the
    redeliveries Pub/Sub makes after a non-2xx answer (a task not yet due, or still running).
    """

    push_endpoint: str | None = None
    _: KW_ONLY
    oidc_service_account_email: str | None = None
    oidc_audience: str | None = None

    @property
    def is_push(self) -> bool:
        return True


#: The historical name of a push queue; kept so existing settings keep working.
Queue = PushQueue


@dataclass(frozen=True)
class PullQueue(_QueueBase):
    """A queue served by ``manage.py i3tasks_worker --queue NAME`` (streaming pull)."""

    @property
    def is_push(self) -> bool:
        return False


AnyQueue = PushQueue | PullQueue


@dataclass(frozen=True)
class Schedule:
    """A cron schedule evaluated by the beat endpoint (``tasks-beat/``).

    ``module_name`` + ``func_name`` name a registered task; they are looked up in the task
    registry, never imported by the beat. ``name`` identifies the schedule in the database (it
    defaults to ``module.func@cron``), so renaming it starts a new slot history.
    """

    module_name: str
    func_name: str
    cron: str
    args: list[Any] | tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    _: KW_ONLY
    timezone: str = "UTC"
    name: str | None = None

    @property
    def task_name(self) -> str:
        return f"{self.module_name}.{self.func_name}"

    @property
    def key(self) -> str:
        return self.name or f"{self.task_name}@{self.cron}"


@dataclass(frozen=True, kw_only=True)
class I3TasksSettings:
    """The whole ``settings.I3TASKS`` value.

    Topic of a queue: ``{namespace}.{queue_name}``; its subscription:
    ``{namespace}.{queue_name}.{subscription_name}``.
    """

    namespace: str
    default_queue: PushQueue
    other_queues: tuple[AnyQueue, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    #: ``.delay()`` runs the task inline at once (tests); the same as ``outbox="inline"``.
    force_sync: bool = False
    default_max_retries: int = 3
    run_queue_create_command_on_startup: bool = False
    #: Task retry backoff: ``min * 2 ** (try - 1)`` seconds, capped at ``max``.
    retry_backoff_min_seconds: float = 1.0
    retry_backoff_max_seconds: float = 600.0
    #: How long a running try is protected from being claimed again. A try whose process died
    #: is run again once this has passed; set it above your longest task.
    lease_seconds: int = 600
    #: Largest push request body the push view reads. Pub/Sub's messages are at most 10 MB and
    #: a push body carries the data base64-encoded (4/3 larger), so the default lets through
    #: every message ``max_payload_bytes`` allows; a system check keeps the two consistent.
    max_push_body_bytes: int = 14 * 1024 * 1024
    #: Largest JSON payload (args + kwargs) accepted by ``.delay()``.
    max_payload_bytes: int = 8 * 1024 * 1024
    #: Beat: a schedule's latest slot still runs when it is at most this old (after downtime
    #: only the latest missed slot runs, once; older ones are given up).
    beat_catch_up_seconds: int = 3600
    #: Beat: how long a try may stay queued and unstarted before the beat publishes it again.
    recovery_after_seconds: int = 600
    #: Beat authentication: a shared secret expected in the ``X-I3Tasks-Beat-Token`` header.
    beat_token: str | None = None
    #: OIDC verification of the push and beat endpoints, on when the emails are set: the
    #: ``Authorization: Bearer`` ID token must be signed by Google for one of these service
    #: accounts. ``oidc_audience`` is the ``aud`` the token must carry; ``None`` means the
    #: request's own absolute URL (Pub/Sub's default audience is the push endpoint URL).
    oidc_audience: str | None = None
    oidc_service_account_emails: tuple[str, ...] = ()
    #: Where Google's token-signing certificates are fetched (``{key id: PEM}``, cached per
    #: its Cache-Control). Change it only to point tests at a local server.
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    #: Token expected in the ``X-I3Tasks-Token`` header of the status and health endpoints.
    status_token: str | None = None
    #: ``i3tasks_clean`` deletes finished executions older than this.
    retention_days: int = 30
    #: How messages leave: ``"pubsub"`` (publish after commit), ``"inline"`` (run at once in
    #: this process, what ``force_sync=True`` does) or ``"recording"`` (keep them in
    #: ``django_i3tasks.outbox.recording`` for tests; see ``django_i3tasks.testing``).
    outbox: str = "pubsub"
    #: A publish not confirmed by Pub/Sub within this many seconds counts as failed: it is
    #: logged, counted by the beat and the health endpoint, and the recovery sweep publishes
    #: the try again after ``recovery_after_seconds``.
    publish_timeout_seconds: float = 30.0

    @property
    def queues(self) -> tuple[AnyQueue, ...]:
        return (self.default_queue, *self.other_queues)
