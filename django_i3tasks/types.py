"""Typed settings objects for ``settings.I3TASKS``.

They are plain frozen dataclasses: building one never fails, so a bad value cannot crash an
import. Every field is validated by the Django system checks (``django_i3tasks.checks``), which
name the field and say why it is wrong.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import timedelta
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


#: The historical name of a push queue; kept so existing settings keep working.
Queue = PushQueue


@dataclass(frozen=True)
class PullQueue(_QueueBase):
    """A queue served by ``manage.py i3tasks_worker --queue NAME`` (streaming pull)."""


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


#: Fields of the 0.1 ``I3TasksSettings`` that are still accepted (so 0.1 settings keep
#: loading) but have no effect; ``manage.py check`` warns about each one that is set.
LEGACY_IGNORED = (
    "register_client_teardown", "health_window_minutes", "health_stuck_minutes",
    "health_failed_threshold", "health_pending_age_seconds_threshold",
)


@dataclass(frozen=True)
class I3TasksSettings:
    """The whole ``settings.I3TASKS`` value.

    Topic of a queue: ``{namespace}.{queue_name}``; its subscription:
    ``{namespace}.{queue_name}.{subscription_name}``.

    The first four fields may be given by position, as 0.1 allowed; the rest by keyword.
    0.1's fields are accepted too: ``retry_minimum_backoff_seconds`` and
    ``retry_maximum_backoff_seconds`` set the subscription retry policy of every queue that
    keeps the default, ``health_token`` is the ``status_token`` when that is unset, and
    ``autoclean_older_than`` (a ``timedelta``) is the retention window; ``LEGACY_IGNORED``
    ones have no effect (a system check says so).
    """

    namespace: str
    default_queue: PushQueue
    other_queues: tuple[AnyQueue, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    _: KW_ONLY
    #: ``.delay()`` runs the task inline at once (tests): an alias of ``outbox="inline"``
    #: (``outbox_mode`` resolves the two).
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
    #: The service accounts accepted on both endpoints (0.x). Prefer the two lists below: the
    #: push identity should not be able to run the beat, nor the scheduler's push tasks.
    oidc_service_account_emails: tuple[str, ...] = ()
    #: Service accounts accepted on the push endpoint (the push subscriptions' identity).
    oidc_push_service_account_emails: tuple[str, ...] = ()
    #: Service accounts accepted on the beat endpoint (the Cloud Scheduler job's identity).
    oidc_beat_service_account_emails: tuple[str, ...] = ()
    #: With ``DEBUG=False``, push and beat refuse every request (403
    #: ``authentication_not_configured``) unless their authentication is configured. True
    #: opens them on purpose: a platform authenticates in front of the app, or a test.
    allow_unauthenticated: bool = False
    #: Modules imported when Django starts, besides every installed app's ``tasks`` module:
    #: tasks defined elsewhere are registered in every process, so they can run.
    task_modules: tuple[str, ...] = ()
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

    # 0.1 fields (see the class docstring). ``None`` means "not given".
    retry_minimum_backoff_seconds: int | None = None
    retry_maximum_backoff_seconds: int | None = None
    health_token: str | None = None
    autoclean_older_than: timedelta | None = None
    register_client_teardown: bool | None = None
    health_window_minutes: int | None = None
    health_stuck_minutes: int | None = None
    health_failed_threshold: int | None = None
    health_pending_age_seconds_threshold: int | None = None

    def __post_init__(self) -> None:
        """Carry 0.1's fields over to the ones that replaced them (frozen, hence setattr)."""
        low, high = self.retry_minimum_backoff_seconds, self.retry_maximum_backoff_seconds
        if low is not None or high is not None:
            queues = [_legacy_backoff(queue, low, high) for queue in self.queues]
            object.__setattr__(self, "default_queue", queues[0])
            object.__setattr__(self, "other_queues", tuple(queues[1:]))
        if self.health_token and not self.status_token:
            object.__setattr__(self, "status_token", self.health_token)
        if isinstance(self.autoclean_older_than, timedelta):
            days = max(1, math.ceil(self.autoclean_older_than.total_seconds() / 86400))
            object.__setattr__(self, "retention_days", days)

    @property
    def outbox_mode(self) -> str:
        """How messages leave: ``outbox``, or ``"inline"`` when ``force_sync`` is on."""
        return "inline" if self.force_sync is True else self.outbox

    @property
    def queues(self) -> tuple[AnyQueue, ...]:
        """The default queue, then the others. A lone queue given without the tuple's comma
        (``other_queues=(PullQueue(...))``) counts as one queue here, so nothing crashes before
        the system check reports it."""
        others = self.other_queues
        if not isinstance(others, tuple | list):
            others = (others,)
        return (self.default_queue, *others)

    @property
    def push_emails(self) -> Any:
        """The accounts the push endpoint accepts (its own list and the shared one)."""
        return _emails(self.oidc_push_service_account_emails, self.oidc_service_account_emails)

    @property
    def beat_emails(self) -> Any:
        """The accounts the beat endpoint accepts (its own list and the shared one)."""
        return _emails(self.oidc_beat_service_account_emails, self.oidc_service_account_emails)


def _emails(*lists: Any) -> Any:
    """The emails of several settings, in order, each once. A setting that is not a tuple of
    str (a bare string would match by substring) is returned as is, for the caller to refuse."""
    merged: list[str] = []
    for emails in lists:
        if not isinstance(emails, tuple | list) or not all(isinstance(e, str) for e in emails):
            if emails:
                return emails
            continue
        merged.extend(emails)
    return tuple(dict.fromkeys(merged))


def _legacy_backoff(queue: Any, low: int | None, high: int | None) -> Any:
    """A queue with 0.1's global subscription backoff, where the queue keeps the default."""
    if not isinstance(queue, PushQueue | PullQueue):
        return queue  # the system check reports it
    changes: dict[str, Any] = {}
    if low is not None and queue.min_retry_backoff_seconds == _QueueBase.min_retry_backoff_seconds:
        changes["min_retry_backoff_seconds"] = low
    if high is not None and queue.max_retry_backoff_seconds == _QueueBase.max_retry_backoff_seconds:
        changes["max_retry_backoff_seconds"] = high
    return replace(queue, **changes) if changes else queue
