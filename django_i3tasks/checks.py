"""Django system checks: every setting is validated at startup, by name."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import pubsub_config
from .registry import registry
from .types import LEGACY_IGNORED, I3TasksSettings, PullQueue, PushQueue, Schedule

#: The values ``I3TASKS.outbox`` accepts.
OUTBOXES = ("pubsub", "inline", "recording")

# Pub/Sub resource ids: start with a letter, 3-255 of [A-Za-z0-9-_.~+%], not "goog".
_RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_NAME_PART = re.compile(r"[A-Za-z0-9\-_.~+%]{1,100}")


#: One id per condition (``manage.py check`` shows it; ``SILENCED_SYSTEM_CHECKS`` takes it).
#: Numbers are never reused for another condition.
ERRORS = {
    "missing": 1, "not_settings": 2, "namespace": 3, "default_queue_kind": 4,
    "other_queues_kind": 5, "queue_kind": 6, "queue_name": 7, "queue_name_twice": 8,
    "ack_deadline": 9, "queue_backoff": 10, "delivery_attempts": 11, "push_endpoint": 12,
    "number_range": 13, "backoff_order": 14, "not_bool": 15, "schedules_kind": 16,
    "schedule_kind": 17, "schedule_twice": 18, "cron": 19, "schedule_task": 20,
    "schedule_arguments": 21, "schedule_timezone": 22, "task_queue": 23,
    "pubsub_config": 24, "project_id": 25, "emulator_host": 26, "credentials": 27,
    "oidc_emails": 28, "oidc_audience": 29, "oidc_certs_url": 30, "endpoint_token": 31,
    "outbox": 32,
    # E040-E049: first contact (project_checks).
    "auth_not_configured": 40, "task_modules": 41, "pubsub_config_key": 42,
    # E101-E104 are the checks of the django.tasks backend (``backends``).
    "tasks_api_missing": 105,
}
WARNINGS = {
    "open_push_endpoint": 1, "push_account": 2, "push_body_limit": 3, "legacy_field": 4,
    "time_limit_lease": 5, "time_limit_ack_deadline": 6,
    # W020-W029: first contact (project_checks, endpoint authentication).
    "shared_oidc_emails": 20, "open_status_endpoint": 21, "push_route": 22,
    "pubsub_config_key": 23,
}
#: The tag of the configuration checks (``manage.py check --tag django_i3tasks``); the
#: endpoint authentication checks are under Django's ``security`` tag.
TAG = "django_i3tasks"


def _error(msg: str, hint: str | None, condition: str, obj: Any = None) -> Error:
    return Error(msg, hint=hint, obj=obj, id=f"django_i3tasks.E{ERRORS[condition]:03d}")


def _number(value: Any, low: float, high: float, *, integer: bool = True) -> bool:
    kinds = (int,) if integer else (int, float)
    return not isinstance(value, bool) and isinstance(value, kinds) and low <= value <= high


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    conf = getattr(settings, "I3TASKS", None)
    if conf is None:
        return [_error("settings.I3TASKS is missing.",
                       "Set I3TASKS = I3TasksSettings(namespace=..., "
                       "default_queue=PushQueue(...)).",
                       "missing")]
    if not isinstance(conf, I3TasksSettings):
        return [_error(f"settings.I3TASKS must be an I3TasksSettings, not {type(conf).__name__}.",
                       "from django_i3tasks.types import I3TasksSettings", "not_settings")]
    errors: list[Error | Warning] = []
    errors += _check_pubsub_config()
    if not isinstance(conf.namespace, str) or not _RESOURCE_ID.fullmatch(conf.namespace):
        errors.append(_error(
            f"I3TASKS.namespace {conf.namespace!r} is not a valid Pub/Sub name prefix.",
            "Start with a letter; use 3-255 of A-Z a-z 0-9 - _ . ~ + %.", "namespace"))
    if not isinstance(conf.default_queue, PushQueue):
        errors.append(_error(
            f"I3TASKS.default_queue must be a PushQueue, not {type(conf.default_queue).__name__}.",
            "Pull queues go in other_queues.", "default_queue_kind"))
    if not isinstance(conf.other_queues, tuple | list):
        errors.append(_error(
            f"I3TASKS.other_queues must be a tuple of queues, not "
            f"{type(conf.other_queues).__name__}.",
            "A one-queue tuple needs its comma: other_queues=(PullQueue(...),).",
            "other_queues_kind"))
        return errors
    seen: set[str] = set()
    for index, queue in enumerate(conf.queues):
        where = "default_queue" if index == 0 else f"other_queues[{index - 1}]"
        if not isinstance(queue, PushQueue | PullQueue):
            errors.append(_error(f"I3TASKS.{where} is not a PushQueue or PullQueue.", None,
                                 "queue_kind"))
            continue
        errors += _check_queue(queue, where)
        if queue.queue_name in seen:
            errors.append(_error(f"I3TASKS.{where}: queue name {queue.queue_name!r} is used twice.",
                                 "Queue names must be unique.", "queue_name_twice"))
        seen.add(queue.queue_name)
    in_range: set[str] = set()
    for name, low, high, integer in (
        ("default_max_retries", 0, 1000, True),
        ("retry_backoff_min_seconds", 0, 86400, False),
        ("retry_backoff_max_seconds", 0, 86400, False),
        ("lease_seconds", 1, 86400, True),
        ("max_push_body_bytes", 1024, 64 * 1024 * 1024, True),
        ("max_payload_bytes", 1, 10 * 1024 * 1024, True),
        ("recovery_after_seconds", 60, 7 * 86400, True),
        ("beat_catch_up_seconds", 60, 31 * 86400, True),
        ("retention_days", 1, 3650, True),
        ("publish_timeout_seconds", 1, 600, False),
    ):
        value = getattr(conf, name)
        if _number(value, low, high, integer=integer):
            in_range.add(name)
        else:
            errors.append(_error(f"I3TASKS.{name} = {value!r} is out of range.",
                                 f"Use a number from {low} to {high}.", "number_range"))
    # The checks that compare two numbers only run when both are valid numbers.
    if ({"max_push_body_bytes", "max_payload_bytes"} <= in_range
            and conf.max_push_body_bytes < push_body_bytes(conf.max_payload_bytes)):
        errors.append(_warning(
            f"I3TASKS.max_push_body_bytes = {conf.max_push_body_bytes} is below what a call "
            f"with max_payload_bytes = {conf.max_payload_bytes} of arguments needs "
            f"({push_body_bytes(conf.max_payload_bytes)}): the push view would refuse such "
            "messages with 413 on every delivery.",
            "Raise max_push_body_bytes or lower max_payload_bytes.", "push_body_limit"))
    if ({"retry_backoff_min_seconds", "retry_backoff_max_seconds"} <= in_range
            and conf.retry_backoff_min_seconds > conf.retry_backoff_max_seconds):
        errors.append(_error(
            "I3TASKS.retry_backoff_min_seconds is above retry_backoff_max_seconds.", None,
            "backoff_order"))
    for name in ("force_sync", "run_queue_create_command_on_startup", "allow_unauthenticated"):
        if not isinstance(getattr(conf, name), bool):
            errors.append(_error(f"I3TASKS.{name} must be True or False.", None,
                                 "not_bool"))
    if not isinstance(conf.schedules, tuple | list):
        errors.append(_error(
            f"I3TASKS.schedules must be a tuple of Schedule, not "
            f"{type(conf.schedules).__name__}.",
            "A one-schedule tuple needs its comma: schedules=(Schedule(...),).",
            "schedules_kind"))
    else:
        keys: set[str] = set()
        for index, schedule in enumerate(conf.schedules):
            errors += _check_schedule(schedule, f"schedules[{index}]", seen)
            if isinstance(schedule, Schedule):
                if schedule.key in keys:
                    errors.append(_error(
                        f"I3TASKS.schedules[{index}]: schedule {schedule.key!r} is listed twice.",
                        "Give one of them a distinct name=.", "schedule_twice"))
                keys.add(schedule.key)
    if conf.outbox not in OUTBOXES:
        errors.append(_error(f"I3TASKS.outbox = {conf.outbox!r} is not one of {OUTBOXES}.",
                             '"pubsub" in production; "inline" or "recording" in tests.',
                             "outbox"))
    errors += [
        _warning(f"I3TASKS.{name} (a 0.1 setting) is set but has no effect any more.",
                 "Remove it; see docs/upgrading.md.", "legacy_field")
        for name in LEGACY_IGNORED if getattr(conf, name) is not None
    ]
    errors += _check_task_queues(seen)
    if "lease_seconds" in in_range:
        errors += _check_time_limits(conf)
    return errors


def _check_time_limits(conf: I3TasksSettings) -> list[Error | Warning]:
    """A try may run for its task's ``time_limit``: its lease and, on a push queue, the ack
    deadline (the push request timeout) must last as long, or the task is run a second time
    while the first run is still going."""
    queues = {queue.queue_name: queue for queue in conf.queues if hasattr(queue, "queue_name")}
    warnings: list[Error | Warning] = []
    for task in registry.all():
        limit = getattr(task, "time_limit", None)
        if limit is None:
            continue
        lease = getattr(task, "lease_seconds", None)
        where = "its lease_seconds" if lease is not None else "I3TASKS.lease_seconds"
        lease = lease if lease is not None else conf.lease_seconds
        if limit >= lease:
            warnings.append(_warning(
                f"Task {task.name} has time_limit={limit:g} s, not below {where} = "
                f"{lease:g}: a try still running after its lease may be claimed "
                "and run again by another delivery.",
                "Raise lease_seconds (the task's or I3TASKS') above the time_limit, or lower "
                "the time_limit.", "time_limit_lease"))
        queue = queues.get(task.queue_name or conf.default_queue.queue_name)
        if (isinstance(queue, PushQueue) and _number(queue.ack_deadline_seconds, 10, 600)
                and limit >= queue.ack_deadline_seconds):
            warnings.append(_warning(
                f"Task {task.name} has time_limit={limit:g} s, not below the ack deadline of its "
                f"push queue {queue.queue_name!r} ({queue.ack_deadline_seconds} s), which is "
                "also the push request timeout: Pub/Sub delivers the message again while the "
                "task runs.",
                "Raise the queue's ack_deadline_seconds (at most 600), lower the time_limit, "
                "or send the task to a pull queue.", "time_limit_ack_deadline"))
    return warnings


@register(Tags.security)
def check_security(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """Endpoint authentication settings, and a warning when the push endpoint is open."""
    conf = getattr(settings, "I3TASKS", None)
    if not isinstance(conf, I3TasksSettings):
        return []  # check_settings reports it
    return _check_auth(conf)


def _check_pubsub_config() -> list[Error]:
    raw = getattr(settings, "PUBSUB_CONFIG", None)
    if not isinstance(raw, dict):
        return [_error("settings.PUBSUB_CONFIG is missing or not a dict.",
                       "PUBSUB_CONFIG = {'EMULATOR': False, 'PROJECT_ID': 'my-project', "
                       "'CREDENTIALS': None}", "pubsub_config")]
    errors = []
    project = raw.get("PROJECT_ID")
    if not isinstance(project, str) or not re.fullmatch(r"[a-z][a-z0-9\-:.]{4,62}", project):
        errors.append(_error(f"PUBSUB_CONFIG['PROJECT_ID'] = {project!r} is not a project id.",
                             None, "project_id"))
    if raw.get("EMULATOR") and not (raw.get("HOST") or os.environ.get("PUBSUB_EMULATOR_HOST")):
        errors.append(_error("PUBSUB_CONFIG['EMULATOR'] is true but no HOST is set.",
                             "Set HOST = 'localhost:8085' or PUBSUB_EMULATOR_HOST.",
                             "emulator_host"))
    credentials = raw.get("CREDENTIALS")
    if credentials not in (None, False) and not raw.get("EMULATOR"):
        if not isinstance(credentials, str | Path) or not Path(credentials).is_file():
            errors.append(_error(
                f"PUBSUB_CONFIG['CREDENTIALS'] = {credentials!r} is not a readable file.",
                "Give the path of a service-account JSON file, or None for Application "
                "Default Credentials.", "credentials"))
    return errors


def _check_queue(queue: PushQueue | PullQueue, where: str) -> list[Error]:
    errors = []
    for name in ("queue_name", "subscription_name"):
        value = getattr(queue, name)
        if not isinstance(value, str) or not _NAME_PART.fullmatch(value):
            errors.append(_error(f"I3TASKS.{where}.{name} = {value!r} is not a valid name.",
                                 "Use 1-100 of A-Z a-z 0-9 - _ . ~ + %.", "queue_name"))
    if not _number(queue.ack_deadline_seconds, 10, 600):
        errors.append(_error(f"I3TASKS.{where}.ack_deadline_seconds must be 10-600 "
                             f"(Pub/Sub's range), got {queue.ack_deadline_seconds!r}.", None,
                             "ack_deadline"))
    low, high = queue.min_retry_backoff_seconds, queue.max_retry_backoff_seconds
    if not (_number(low, 0, 600) and _number(high, 0, 600) and low <= high):
        errors.append(_error(f"I3TASKS.{where}: retry backoff must satisfy 0 <= min <= max <= 600,"
                             f" got {low!r}..{high!r}.", None, "queue_backoff"))
    if not _number(queue.max_delivery_attempts, 5, 100):
        errors.append(_error(f"I3TASKS.{where}.max_delivery_attempts must be 5-100.", None,
                             "delivery_attempts"))
    if isinstance(queue, PushQueue) and queue.push_endpoint is not None:
        url = urlparse(str(queue.push_endpoint))
        if url.scheme not in ("http", "https") or not url.netloc:
            errors.append(_error(f"I3TASKS.{where}.push_endpoint {queue.push_endpoint!r} is not "
                                 "an http(s) URL.", None, "push_endpoint"))
    return errors


def _check_schedule(schedule: Any, where: str, queue_names: set[str]) -> list[Error]:
    from croniter import croniter

    if not isinstance(schedule, Schedule):
        return [_error(f"I3TASKS.{where} is not a Schedule.", None, "schedule_kind")]
    errors = []
    if not isinstance(schedule.cron, str) or not croniter.is_valid(schedule.cron):
        errors.append(_error(f"I3TASKS.{where}.cron {schedule.cron!r} is not a cron expression.",
                             "Five fields: minute hour day-of-month month day-of-week.", "cron"))
    if schedule.task_name not in registry:
        errors.append(_error(f"I3TASKS.{where} names {schedule.task_name!r}, which is not a "
                             "registered task.",
                             "Decorate it with @TaskDecorator in an installed app's tasks module.",
                             "schedule_task"))
    if not isinstance(schedule.args, list | tuple) or not isinstance(schedule.kwargs, dict):
        errors.append(_error(f"I3TASKS.{where}: args must be a list and kwargs a dict.", None,
                             "schedule_arguments"))
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(str(schedule.timezone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors.append(_error(f"I3TASKS.{where}.timezone {schedule.timezone!r} is unknown.",
                             None, "schedule_timezone"))
    return errors


def _check_task_queues(queue_names: set[str]) -> list[Error]:
    return [
        _error(f"Task {task.name} uses queue {task.queue_name!r}, which is not configured.",
               "Add it to I3TASKS.other_queues.", "task_queue")
        for task in registry.all()
        if task.queue_name is not None and task.queue_name not in queue_names
    ]


def push_body_bytes(payload_bytes: int) -> int:
    """The push body a message with ``payload_bytes`` of arguments can need: its data is
    base64-encoded in the envelope, next to the other fields and the attributes."""
    return -(-(payload_bytes + _MESSAGE_OVERHEAD) * 4 // 3) + _MESSAGE_OVERHEAD


#: Generous room for a message's fields besides the arguments, and for the push envelope.
_MESSAGE_OVERHEAD = 16 * 1024


def _warning(msg: str, hint: str | None, condition: str) -> Warning:
    return Warning(msg, hint=hint, id=f"django_i3tasks.W{WARNINGS[condition]:03d}")


_EMAIL_FIELDS = ("oidc_service_account_emails", "oidc_push_service_account_emails",
                 "oidc_beat_service_account_emails")


def _check_auth(conf: I3TasksSettings) -> list[Error | Warning]:
    """Endpoint authentication settings, and a warning when the push endpoint is open on
    purpose (``DEBUG`` or ``allow_unauthenticated``; otherwise ``project_checks`` says it
    refuses everything)."""
    errors: list[Error | Warning] = []
    valid = True
    for name in _EMAIL_FIELDS:
        emails = getattr(conf, name)
        if isinstance(emails, str) or not isinstance(emails, tuple | list) or not all(
            isinstance(email, str) and "@" in email for email in emails
        ):
            errors.append(_error(
                f"I3TASKS.{name} = {emails!r} is not a tuple of emails.",
                "Write a tuple, e.g. ('pubsub-push@my-project.iam.gserviceaccount.com',).",
                "oidc_emails"))
            valid = False
    if valid and conf.oidc_service_account_emails:
        errors.append(_warning(
            "I3TASKS.oidc_service_account_emails is accepted on both the push and the beat "
            "endpoint: the scheduler's token can push tasks and the push identity can run "
            "the beat.",
            "Split it: oidc_push_service_account_emails=(the push subscriptions' account,), "
            "oidc_beat_service_account_emails=(the Cloud Scheduler job's account,).",
            "shared_oidc_emails"))
    push_emails = conf.push_emails if valid else ()
    audience = conf.oidc_audience
    if audience is not None and (not isinstance(audience, str) or not audience):
        errors.append(_error(f"I3TASKS.oidc_audience = {audience!r} must be None or a "
                             "non-empty string.", None, "oidc_audience"))
    url = urlparse(conf.oidc_certs_url) if isinstance(conf.oidc_certs_url, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.netloc:
        errors.append(_error(f"I3TASKS.oidc_certs_url = {conf.oidc_certs_url!r} is not an "
                             "http(s) URL.", None, "oidc_certs_url"))
    for name in ("beat_token", "status_token"):
        value = getattr(conf, name)
        if value is not None and (not isinstance(value, str) or not value):
            errors.append(_error(f"I3TASKS.{name} must be None or a non-empty string.",
                                 None, "endpoint_token"))
    if push_emails:
        errors += [
            _warning(f"Queue {queue.queue_name!r} pushes with service account "
                     f"{queue.oidc_service_account_email!r}, which "
                     "I3TASKS.oidc_push_service_account_emails does not accept.",
                     "Every push to it will be refused with 403; add the email.", "push_account")
            for queue in conf.queues
            if isinstance(queue, PushQueue) and queue.oidc_service_account_email
            and queue.oidc_service_account_email not in push_emails
        ]
    elif (settings.DEBUG or conf.allow_unauthenticated is True) and valid \
            and not conf.force_sync and not _uses_emulator():
        errors.append(_warning(
            "The push endpoint accepts requests from anyone who can reach it: "
            "I3TASKS.oidc_push_service_account_emails is empty and allow_unauthenticated (or "
            "DEBUG) lets it answer. Only messages signed with SECRET_KEY "
            "run, but then anyone holding that key can run any registered task.",
            "Set oidc_push_service_account_emails to the service account of your push "
            "subscriptions (PushQueue(oidc_service_account_email=...)); see SECURITY.md.",
            "open_push_endpoint"))
    return errors


#: The dotted path of our backend of Django's tasks API, as ``settings.TASKS`` names it.
TASKS_BACKEND = "django_i3tasks.backends.PubSubBackend"


def uses_tasks_backend() -> bool:
    """Whether ``settings.TASKS`` names ``PubSubBackend`` for some alias."""
    tasks = getattr(settings, "TASKS", None)
    return isinstance(tasks, dict) and any(
        isinstance(params, dict) and params.get("BACKEND") == TASKS_BACKEND
        for params in tasks.values()
    )


def tasks_api_installed() -> bool:
    """Django 6's ``django.tasks`` or the ``django-tasks`` backport is importable."""
    from importlib.util import find_spec

    return find_spec("django.tasks") is not None or find_spec("django_tasks") is not None


@register(TAG)
def check_tasks_backend(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``TASKS`` names our backend where no tasks API exists: nothing would ever read it
    (Django < 6 has no ``django.tasks``), so the project's ``@task`` functions would not be
    ours. The backend's own checks (queues, options) run through the tasks framework."""
    if not uses_tasks_backend() or tasks_api_installed():
        return []
    return [_error(
        f"settings.TASKS uses {TASKS_BACKEND}, but Django's tasks API is not installed.",
        "Use Django 6+, or install the backport on Django 4.2-5.2: "
        "pip install 'django-tasks>=0.10' (and add 'django_tasks' to INSTALLED_APPS).",
        "tasks_api_missing",
    )]


def _uses_emulator() -> bool:
    from django.core.exceptions import ImproperlyConfigured

    try:
        return pubsub_config().emulator_host is not None
    except ImproperlyConfigured:
        return False

