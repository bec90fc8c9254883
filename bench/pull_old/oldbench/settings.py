"""Settings for django-i3tasks 0.1.9 on the benchmark's database and Pub/Sub emulator.

The same environment variables as ``tests/settings.py`` pick the database
(``I3TASKS_TEST_DB``, ``I3TASKS_SQLITE_PATH``, ``I3TASKS_TEST_DB_NAME``, ``I3TASKS_PG_HOST``,
``I3TASKS_PG_PORT``). 0.1.9's app label is ``i3tasks``, so its tables (``i3tasks_*``) live
beside the new package's (``django_i3tasks_*``) in the same database. Its topics get their
own namespace (``I3OLD_NAMESPACE``) on the same emulator.
"""

import os
import tempfile

from django_i3tasks.types import I3TasksSettings, PullQueue, PushQueue

SECRET_KEY = "bench-secret-key-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_i3tasks", "oldbench"]

TEST_DB = os.environ.get("I3TASKS_TEST_DB", "sqlite")
if TEST_DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("I3TASKS_TEST_DB_NAME", "i3tasks"),
            "USER": "postgres",
            "HOST": os.environ.get("I3TASKS_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("I3TASKS_PG_PORT", "5432"),
            # The production setting every system of bench/compare.py runs with
            # (I3OLD_CONN_MAX_AGE; Django's default 0 when unset).
            "CONN_MAX_AGE": int(os.environ.get("I3OLD_CONN_MAX_AGE", "0")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("I3TASKS_SQLITE_PATH")
            or os.path.join(tempfile.gettempdir(), "i3tasks-bench-old.sqlite3"),
            "OPTIONS": {"timeout": 30},
        }
    }

PUBSUB_CONFIG = {
    "EMULATOR": True,
    "HOST": os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
    "PROJECT_ID": "i3tasks-test",
    "CREDENTIALS": False,
}

I3TASKS = I3TasksSettings(
    namespace=os.environ.get("I3OLD_NAMESPACE", "bench.old"),
    # 0.1.9 requires a push default queue; nothing is published to it here.
    default_queue=PushQueue("default", "push", "http://127.0.0.1:9/i3/tasks-push/"),
    other_queues=(PullQueue("heavy", "pull"),),
    schedules=(),
    default_max_retries=3,
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_i3tasks": {"handlers": ["console"], "level": "WARNING"}},
}
