"""The Celery application of the comparison (``celery -A compare_project.celery_app``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compare_project.settings")
app = Celery("compare_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["compare_project"], related_name="celery_tasks")
