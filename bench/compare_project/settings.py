"""Settings of the comparison's Django project (``bench/compare.py``); every process of the
run (gunicorn, the pull worker, the Celery worker, the driver) reads them from the
environment the driver sets:

``CMP_DB`` sqlite|postgres, ``CMP_DB_NAME`` (PostgreSQL database or SQLite file),
``CMP_CONN_MAX_AGE`` (seconds; 0 is Django's default), ``CMP_PUSH_URL`` (where Pub/Sub
pushes), ``CMP_NAMESPACE`` (topics of this run), ``CMP_REDIS`` (Celery broker),
``CMP_CELERY_RESULTS`` redis|db, ``CMP_CELERY_BROKER`` (the broker, default ``CMP_REDIS``),
``CMP_CELERY_PREFETCH`` (prefetch multiplier), ``CMP_CELERY_SAFE`` (1: ``acks_late`` and
``reject_on_worker_lost``), ``CMP_INFLIGHT`` (1: the WSGI wrapper records every request's
span, so the driver can count requests in flight), ``PUBSUB_EMULATOR_HOST``.
"""

import os

from django_i3tasks.types import I3TasksSettings, PullQueue, PushQueue

SECRET_KEY = "compare-bench-secret-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "compare_project.urls"
WSGI_APPLICATION = "compare_project.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_i3tasks",
    "django_celery_results",
    # The durable peer "django-tasks, database backend" (its tables and ``db_worker``).
    "django_tasks",
    "django_tasks_db",
    "compare_project",
]
# What an API-only deployment runs; the same for every view measured.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

CONN_MAX_AGE = int(os.environ.get("CMP_CONN_MAX_AGE", "60"))
if os.environ.get("CMP_DB", "postgres") == "postgres":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CMP_DB_NAME", "i3tasks_compare"),
        "USER": "postgres",
        "HOST": os.environ.get("I3TASKS_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("I3TASKS_PG_PORT", "5432"),
        "CONN_MAX_AGE": CONN_MAX_AGE,
        "CONN_HEALTH_CHECKS": CONN_MAX_AGE > 0,
    }}
else:
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CMP_DB_NAME", "/tmp/i3tasks-compare.sqlite3"),
        "CONN_MAX_AGE": CONN_MAX_AGE,
        # What the README recommends for SQLite with several writers.
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL"},
    }}

PUBSUB_CONFIG = {
    "EMULATOR": True,
    "HOST": os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
    "PROJECT_ID": "i3tasks-compare",
    "CREDENTIALS": None,
}
I3TASKS = I3TasksSettings(
    namespace=os.environ.get("CMP_NAMESPACE", "cmp"),
    default_queue=PushQueue("push", "push", os.environ.get("CMP_PUSH_URL"),
                            ack_deadline_seconds=60, min_retry_backoff_seconds=10),
    other_queues=(
        PullQueue("pull", "pull"),
        # Nobody consumes it: enqueue latency is measured on it.
        PullQueue("latency", "idle"),
    ),
    default_max_retries=0,
    # A benchmark against the emulator (which sends no OIDC token), with DEBUG=False.
    allow_unauthenticated=True,
)

REDIS_URL = os.environ.get("CMP_REDIS", "redis://127.0.0.1:6379/7")
CELERY_BROKER_URL = os.environ.get("CMP_CELERY_BROKER", REDIS_URL)
CELERY_RESULT_BACKEND = "django-db" if os.environ.get("CMP_CELERY_RESULTS") == "db" \
    else REDIS_URL
CELERY_TASK_ROUTES = {"compare_project.celery_tasks.latency_noop": {"queue": "latency"}}
CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("CMP_CELERY_PREFETCH", "4"))
# Celery's Django fixup closes the database connections before and after every task unless
# ``DB_REUSE_MAX`` is set (it then closes them every 2 x that many tasks): without it every
# task opens a new PostgreSQL session, which ``CONN_MAX_AGE`` cannot prevent. The bench keeps
# them, as a production deployment that cares about throughput would.
CELERY_DB_REUSE_MAX = 1_000_000
# "Celery with our guarantees": acknowledge after running, and give a task back when its
# worker process dies (with a durable broker: Redis appendonly, see ``bench/compare.py``).
CELERY_TASK_ACKS_LATE = os.environ.get("CMP_CELERY_SAFE") == "1"
CELERY_TASK_REJECT_ON_WORKER_LOST = CELERY_TASK_ACKS_LATE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The durable peer django-tasks: its database backend, results in the same database.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend",
                     "QUEUES": ["default", "idle"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_i3tasks": {"handlers": ["console"], "level": "WARNING"}},
}
