"""System checks name every bad setting."""

import dataclasses

import pytest
from django.conf import settings as django_settings

from django_i3tasks.checks import check_security
from django_i3tasks.checks import check_settings as check_configuration
from django_i3tasks.types import PullQueue, PushQueue, Queue, Schedule


def check_settings():
    """Both registered checks: configuration (tag django_i3tasks) and security."""
    return check_configuration() + check_security()


def ids(errors):
    return sorted({e.id for e in errors})


def messages(errors):
    return " | ".join(e.msg for e in errors)


def test_valid_settings_have_no_errors():
    assert check_settings() == []


def test_queue_is_push_queue_alias():
    assert Queue is PushQueue


def test_missing_i3tasks(settings):
    del settings.I3TASKS
    assert ids(check_settings()) == ["django_i3tasks.E001"]


def test_wrong_type(settings):
    settings.I3TASKS = {"namespace": "x"}
    assert ids(check_settings()) == ["django_i3tasks.E002"]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"namespace": "1bad"}, "namespace"),
        ({"default_queue": PullQueue("q", "s")}, "default_queue must be a PushQueue"),
        ({"other_queues": (PushQueue("default", "x"),)}, "used twice"),
        ({"default_queue": PushQueue("bad name", "s")}, "queue_name"),
        ({"default_queue": PushQueue("q", "s", ack_deadline_seconds=5)}, "ack_deadline_seconds"),
        ({"default_queue": PushQueue("q", "s", push_endpoint="ftp://x")}, "push_endpoint"),
        ({"default_queue": PushQueue("q", "s", min_retry_backoff_seconds=30,
                                     max_retry_backoff_seconds=10)}, "retry backoff"),
        ({"default_max_retries": -1}, "default_max_retries"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"force_sync": "yes"}, "force_sync"),
        ({"retry_backoff_min_seconds": 10, "retry_backoff_max_seconds": 1},
         "retry_backoff_min_seconds is above"),
        ({"schedules": (Schedule("tests.testapp.tasks", "add", "61 * * * *"),)}, "cron"),
        ({"schedules": (Schedule("tests.testapp.tasks", "nope", "* * * * *"),)},
         "not a registered task"),
        ({"schedules": (Schedule("tests.testapp.side_effect", "not_a_task", "* * * * *"),)},
         "not a registered task"),
        ({"schedules": (Schedule("tests.testapp.tasks", "add", "* * * * *",
                                 timezone="Mars/Base"),)}, "timezone"),
        ({"schedules": (Schedule("tests.testapp.tasks", "add", "* * * * *"),
                        Schedule("tests.testapp.tasks", "add", "* * * * *"))}, "listed twice"),
    ],
)
def test_bad_fields_are_named(settings, change, expected):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, **change)
    errors = check_settings()
    assert errors, f"no error for {change}"
    assert expected in messages(errors)


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, "PUBSUB_CONFIG is missing"),
        ({"PROJECT_ID": "x"}, "PROJECT_ID"),
        ({"PROJECT_ID": "my-project", "CREDENTIALS": "/nonexistent.json"}, "CREDENTIALS"),
    ],
)
def test_bad_pubsub_config(settings, config, expected):
    settings.PUBSUB_CONFIG = config
    assert expected in messages(check_settings())


# --- endpoint authentication ----------------------------------------------------------------

PRODUCTION_PUBSUB = {"EMULATOR": False, "PROJECT_ID": "my-project", "CREDENTIALS": None}
PUSH_ACCOUNT = "push@my-project.iam.gserviceaccount.com"


@pytest.fixture
def production(settings, monkeypatch):
    """Real Pub/Sub (no emulator), so an open push endpoint is worth a warning."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    settings.PUBSUB_CONFIG = PRODUCTION_PUBSUB
    return settings


def test_open_push_endpoint_warns_in_production(production):
    assert ids(check_settings()) == ["django_i3tasks.W001"]
    assert "oidc_push_service_account_emails" in messages(check_settings())


def test_open_push_endpoint_is_fine_with_oidc(production):
    production.I3TASKS = dataclasses.replace(
        django_settings.I3TASKS, oidc_push_service_account_emails=(PUSH_ACCOUNT,))
    assert check_settings() == []


def test_open_push_endpoint_is_fine_with_force_sync(production):
    production.I3TASKS = dataclasses.replace(django_settings.I3TASKS, force_sync=True)
    assert check_settings() == []


@pytest.mark.parametrize("config, env", [
    ({**PRODUCTION_PUBSUB, "EMULATOR": True, "HOST": "localhost:8085"}, None),
    (PRODUCTION_PUBSUB, "localhost:8085"),
], ids=["PUBSUB_CONFIG", "PUBSUB_EMULATOR_HOST"])
def test_open_push_endpoint_is_fine_with_the_emulator(production, monkeypatch, config, env):
    production.PUBSUB_CONFIG = config
    if env:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", env)
    assert check_settings() == []


@pytest.mark.parametrize("value", [
    PUSH_ACCOUNT,  # a bare string: would match by substring
    [PUSH_ACCOUNT, 42],
    ("not-an-email",),
    None,
    {PUSH_ACCOUNT: True},
])
@pytest.mark.parametrize("field", ["oidc_service_account_emails",
                                   "oidc_push_service_account_emails",
                                   "oidc_beat_service_account_emails"])
def test_oidc_emails_must_be_a_tuple_of_emails(settings, value, field):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, **{field: value})
    errors = check_settings()
    assert ids(errors) == ["django_i3tasks.E028"]
    assert field in messages(errors)


def test_oidc_emails_as_a_list_are_accepted(settings):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS,
                                           oidc_push_service_account_emails=[PUSH_ACCOUNT])
    assert check_settings() == []


@pytest.mark.parametrize("change, expected, check_id", [
    ({"oidc_audience": ""}, "oidc_audience", "E029"),
    ({"oidc_audience": 5}, "oidc_audience", "E029"),
    ({"oidc_certs_url": "file:///etc/certs.json"}, "oidc_certs_url", "E030"),
    ({"oidc_certs_url": None}, "oidc_certs_url", "E030"),
    ({"beat_token": ""}, "beat_token", "E031"),
    ({"status_token": 1234}, "status_token", "E031"),
])
def test_auth_fields_are_named(settings, change, expected, check_id):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, **change)
    errors = check_security()
    assert ids(errors) == [f"django_i3tasks.{check_id}"]
    assert expected in messages(errors)


def test_each_condition_has_its_own_id_and_a_fitting_tag():
    from django.core.checks import registry as check_registry

    from django_i3tasks import checks

    assert len(set(checks.ERRORS.values())) == len(checks.ERRORS)
    assert len(set(checks.WARNINGS.values())) == len(checks.WARNINGS)
    assert check_registry.registry.tag_exists("django_i3tasks")
    registered = check_registry.registry.registered_checks
    tagged = {check.__name__: set(check.tags) for check in registered}
    assert tagged["check_settings"] == {"django_i3tasks"}
    assert tagged["check_security"] == {"security"}


@pytest.mark.parametrize("change, expected, check_id", [
    ({"outbox": "kafka"}, "outbox", "E032"),
    ({"publish_timeout_seconds": 0}, "publish_timeout_seconds", "E013"),
    ({"health_stuck_minutes": 5}, "health_stuck_minutes", "W004"),
])
def test_new_and_legacy_fields_are_named(settings, change, expected, check_id):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, **change)
    errors = check_settings()
    assert ids(errors) == [f"django_i3tasks.{check_id}"]
    assert expected in messages(errors)


def test_push_queue_account_not_accepted_warns(settings):
    queue = dataclasses.replace(django_settings.I3TASKS.default_queue,
                                oidc_service_account_email="other@p.iam.gserviceaccount.com")
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, default_queue=queue,
                                           oidc_push_service_account_emails=(PUSH_ACCOUNT,))
    assert ids(check_settings()) == ["django_i3tasks.W002"]
    settings.I3TASKS = dataclasses.replace(settings.I3TASKS,
                                           oidc_push_service_account_emails=(
                                               PUSH_ACCOUNT, "other@p.iam.gserviceaccount.com"))
    assert check_settings() == []


def test_push_body_limit_must_fit_the_payload_limit(settings):
    """A call .delay() accepts must not be refused by the push view on every delivery."""
    from django_i3tasks.checks import push_body_bytes

    assert check_settings() == []  # the defaults fit together
    payload = 8 * 1024 * 1024
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, max_payload_bytes=payload,
                                           max_push_body_bytes=10 * 1024 * 1024)
    errors = check_settings()
    assert ids(errors) == ["django_i3tasks.W003"]
    assert "max_push_body_bytes = 10485760" in messages(errors)
    settings.I3TASKS = dataclasses.replace(settings.I3TASKS,
                                           max_push_body_bytes=push_body_bytes(payload))
    assert check_settings() == []


def test_push_body_bound_covers_a_real_envelope():
    import json
    import uuid

    from django_i3tasks.checks import push_body_bytes
    from django_i3tasks.messages import TaskMessage
    from tests.helpers import push_envelope

    payload = 1024 * 1024
    args = ["x" * (payload - len(json.dumps([[""], {}])))]
    assert len(json.dumps([args, {}])) == payload
    message = TaskMessage(execution_id=2**62, execution_uuid=uuid.uuid4(), try_id=2**62,
                          try_number=1000, task_name="a." * 60 + "task", queue_name="q" * 100,
                          args=args, max_retries=1000, group_id=2**62)
    data, attributes = message.encode()
    assert len(push_envelope(data, attributes)) <= push_body_bytes(payload)


def test_tasks_backend_without_a_tasks_api_is_named(settings, monkeypatch):
    from django_i3tasks import checks

    settings.TASKS = {"default": {"BACKEND": "django_i3tasks.backends.PubSubBackend"}}
    monkeypatch.setattr(checks, "tasks_api_installed", lambda: False)
    (error,) = checks.check_tasks_backend()
    assert error.id == "django_i3tasks.E105"
    assert "django-tasks" in error.hint and "PubSubBackend" in error.msg
    monkeypatch.setattr(checks, "tasks_api_installed", lambda: True)
    assert checks.check_tasks_backend() == []
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    monkeypatch.setattr(checks, "tasks_api_installed", lambda: False)
    assert checks.check_tasks_backend() == []
