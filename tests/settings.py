"""Settings of the test suite. ``I3TASKS_TEST_DB`` picks the database: sqlite or postgres."""

import os
import tempfile
from importlib.util import find_spec
from typing import Any

import django

from django_i3tasks.types import I3TasksSettings, PullQueue, PushQueue

SECRET_KEY = "test-secret-key-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the live server serves the admin's CSS (browser test)
    "django_i3tasks",
    "tests.testapp",
]
MIDDLEWARE = [
    "tests.middleware.PushCounter",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

TEST_DB = os.environ.get("I3TASKS_TEST_DB", "sqlite")
DATABASES: dict[str, dict[str, Any]]
if TEST_DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            # A worker subprocess of a test attaches to that test's database by name.
            "NAME": os.environ.get("I3TASKS_TEST_DB_NAME", "i3tasks"),
            "USER": "postgres",
            "HOST": os.environ.get("I3TASKS_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("I3TASKS_PG_PORT", "5432"),
            "TEST": {"NAME": f"i3tasks_test_{os.getpid()}"},
        }
    }
elif TEST_DB == "sqlite":
    # A file, not :memory:, so the live server's threads share the test database; concurrent
    # writers wait their turn (IMMEDIATE transactions, WAL), as the README recommends.
    _path = os.environ.get("I3TASKS_SQLITE_PATH") or os.path.join(
        tempfile.gettempdir(), f"i3tasks-test-{os.getpid()}.sqlite3"
    )
    # Both options exist from Django 5.1 on; before, tests/conftest.py turns WAL on and writers
    # wait on the busy timeout.
    _options: dict[str, Any] = {"timeout": 30}
    if django.VERSION >= (5, 1):
        _options.update(transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _path,
            "TEST": {"NAME": _path},
            "OPTIONS": _options,
        }
    }
else:
    raise RuntimeError(f"I3TASKS_TEST_DB must be sqlite or postgres, not {TEST_DB!r}")

# Benchmarks give worker subprocesses persistent connections, as a production worker has.
for _database in DATABASES.values():
    _database["CONN_MAX_AGE"] = int(os.environ.get("I3TASKS_TEST_CONN_MAX_AGE", "0"))

PUBSUB_CONFIG = {
    "EMULATOR": True,
    "HOST": os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
    "PROJECT_ID": "i3tasks-test",
    "CREDENTIALS": None,
}

I3TASKS = I3TasksSettings(
    # A worker subprocess of a test serves that test's namespace (its topics).
    namespace=os.environ.get("I3TASKS_TEST_NAMESPACE", "tests.i3"),
    default_queue=PushQueue("default", "push"),
    other_queues=(PullQueue("heavy", "pull"),),
    default_max_retries=3,
    retry_backoff_min_seconds=0.2,
    retry_backoff_max_seconds=2.0,
    # DEBUG is False here, as in production: push and beat are open only because this says
    # so (tests/test_first_contact.py tests the refusal without it).
    allow_unauthenticated=True,
    # The database-outage test's server: a try whose recording the outage broke is taken
    # over after this lease (tests/e2e/test_faults.py), not after the default 600 s.
    lease_seconds=int(os.environ.get("I3TASKS_TEST_LEASE_SECONDS", "600")),
)

# Django's tasks API (tests/test_backends.py): "default" gives each task one try, "retrying"
# two. Set only where an API is installed (else a check would rightly call it an error);
# before Django 6 the API is the django-tasks backport, an app.
if find_spec("django.tasks") is not None or find_spec("django_tasks") is not None:
    TASKS = {
        "default": {
            "BACKEND": "django_i3tasks.backends.PubSubBackend",
            "QUEUES": ["default", "heavy"],
            "OPTIONS": {"MAX_RETRIES": 0},
        },
        "retrying": {
            "BACKEND": "django_i3tasks.backends.PubSubBackend",
            "OPTIONS": {"MAX_RETRIES": 1},
        },
    }
    if find_spec("django.tasks") is None:
        INSTALLED_APPS.append("django_tasks")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_i3tasks": {"handlers": ["console"], "level": "WARNING"}},
}
