"""Settings of the example project: SQLite and the local Pub/Sub emulator by default.

Environment: ``DEMO_DB`` (SQLite path), ``PUBSUB_EMULATOR_HOST``, ``DEMO_PUSH_ENDPOINT``
(the URL Pub/Sub pushes to: this server's ``/i3/tasks-push/``).
"""

import os
from pathlib import Path

from django_i3tasks.types import I3TasksSettings, PullQueue, PushQueue, Schedule

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "example_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_i3tasks",
    "demo_app",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
STATIC_URL = "static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", str(BASE_DIR / "demo.sqlite3")),
        # The push view's threads and the pull worker write concurrently: take the write lock
        # when a transaction starts (Django 5.1+) and let readers run beside the writer (WAL).
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL"},
    }
}

PUBSUB_CONFIG = {
    "EMULATOR": True,
    "HOST": os.environ.get("PUBSUB_EMULATOR_HOST", "localhost:8085"),
    "PROJECT_ID": "i3tasks-demo",
    "CREDENTIALS": None,
}

I3TASKS = I3TasksSettings(
    namespace="demo.i3tasks",
    default_queue=PushQueue(
        queue_name="default",
        subscription_name="push",
        push_endpoint=os.environ.get("DEMO_PUSH_ENDPOINT", "http://127.0.0.1:8000/i3/tasks-push/"),
        ack_deadline_seconds=30,
        min_retry_backoff_seconds=1,
        max_retry_backoff_seconds=5,
    ),
    other_queues=(PullQueue(queue_name="heavy", subscription_name="pull"),),
    schedules=(Schedule(module_name="demo_app.tasks", func_name="heartbeat", cron="* * * * *"),),
    default_max_retries=2,
    retry_backoff_min_seconds=1.0,
    retry_backoff_max_seconds=4.0,
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_i3tasks": {"handlers": ["console"], "level": "INFO"}},
}
