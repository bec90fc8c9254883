"""``manage.py check`` runs the package's checks and fails on their errors only."""

import dataclasses

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError


# Django 6 runs the model checks against every database (SQLite's JSON support check opens a
# connection), so ``manage.py check`` needs the test database there.
@pytest.mark.django_db
def test_manage_py_check_fails_with_the_field_name(settings):
    settings.I3TASKS = dataclasses.replace(django_settings.I3TASKS, lease_seconds=-5)
    with pytest.raises(SystemCheckError, match="lease_seconds"):
        call_command("check")


PRODUCTION_PUBSUB = {"EMULATOR": False, "PROJECT_ID": "my-project", "CREDENTIALS": None}


@pytest.fixture
def production(settings, monkeypatch):
    """Real Pub/Sub (no emulator), so an open push endpoint is worth a warning."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    settings.PUBSUB_CONFIG = PRODUCTION_PUBSUB
    return settings


@pytest.mark.django_db  # as above: Django 6's check touches the database
def test_open_push_warning_does_not_fail_manage_py_check(production):
    import io

    out, err = io.StringIO(), io.StringIO()
    call_command("check", stdout=out, stderr=err)  # raises SystemCheckError on errors only
    assert "django_i3tasks.W001" in out.getvalue() + err.getvalue()
