"""Secure by default: with ``DEBUG=False`` push and beat refuse every request until their
authentication is configured (or ``allow_unauthenticated`` opens them on purpose); push and
beat accounts are separate; the audience ignores the query string; names match whole; a bad
Host gets the package's JSON answer.

The test settings run with ``DEBUG=False`` and ``allow_unauthenticated=True``; the tests here
take the latter away.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.conf import settings as django_settings
from django.test import Client, RequestFactory

from django_i3tasks import auth, views
from django_i3tasks.exceptions import AuthenticationNotConfigured, AuthError
from django_i3tasks.messages import InvalidMessage, TaskMessage
from django_i3tasks.project_checks import check_endpoint_authentication
from tests.e2e.test_auth_push import push_url, queued_push, state
from tests.helpers import http
from tests.oidc import SERVICE_ACCOUNT, make_token
from tests.testapp import tasks
from tests.unit.test_checks import check_settings, ids, messages

SCHEDULER_ACCOUNT = "scheduler@i3tasks-test.iam.gserviceaccount.com"


@pytest.fixture
def closed(i3settings):
    """Production defaults: DEBUG=False (the test settings) and allow_unauthenticated off."""
    return i3settings(allow_unauthenticated=False)


# --- push: a genuine message without a token -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_push_without_authentication_is_refused_and_nothing_runs(live_server, no_publish,
                                                                 closed):
    body = queued_push(no_publish)
    before = state()
    status, _, content = http("POST", push_url(live_server), body)
    answer = json.loads(content)
    assert status == 403
    assert answer["error"] == "authentication_not_configured"
    assert "oidc_push_service_account_emails" in answer["detail"]
    assert tasks.CALLS.total() == 0
    assert state() == before  # no try claimed, no result written


@pytest.mark.django_db(transaction=True)
def test_push_runs_with_allow_unauthenticated(live_server, no_publish, i3settings):
    i3settings(allow_unauthenticated=True)
    body = queued_push(no_publish)
    status, _, content = http("POST", push_url(live_server), body)
    assert status == 200 and json.loads(content)["status"] == "success"
    assert tasks.CALLS["add:2:3"] == 1


@pytest.mark.django_db(transaction=True)
def test_push_runs_under_debug(live_server, no_publish, closed, settings):
    settings.DEBUG = True
    body = queued_push(no_publish)
    status, _, content = http("POST", push_url(live_server), body)
    assert status == 200 and json.loads(content)["status"] == "success"


# --- beat ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_beat_without_authentication_is_refused_and_runs_nothing(closed, monkeypatch):
    ran = []
    monkeypatch.setattr(views, "run_beat", lambda *args: ran.append(args))
    response = Client().post("/i3/tasks-beat/")
    assert response.status_code == 403
    assert response.json()["error"] == "authentication_not_configured"
    assert "oidc_beat_service_account_emails or I3TASKS.beat_token" in response.json()["detail"]
    assert ran == []


def test_beat_with_a_secret_needs_no_allow_unauthenticated(i3settings):
    i3settings(allow_unauthenticated=False, beat_token="s3cret-beat")
    request = RequestFactory().post("/i3/tasks-beat/", HTTP_X_I3TASKS_BEAT_TOKEN="s3cret-beat")
    auth.authenticate_beat(request)  # no exception
    with pytest.raises(AuthError) as refused:
        auth.authenticate_beat(RequestFactory().post("/i3/tasks-beat/"))
    assert refused.value.status == 401


def test_beat_is_open_under_debug(closed, settings):
    settings.DEBUG = True
    auth.authenticate_beat(RequestFactory().post("/i3/tasks-beat/"))
    settings.DEBUG = False
    with pytest.raises(AuthenticationNotConfigured):
        auth.authenticate_beat(RequestFactory().post("/i3/tasks-beat/"))


# --- the system check --------------------------------------------------------------------------


def test_check_is_an_error_when_endpoints_would_refuse_everything(closed):
    """The emulator is configured in the test settings: the error stands anyway."""
    errors = check_endpoint_authentication()
    assert "django_i3tasks.E040" in ids(errors)
    text = messages(errors)
    assert "push (tasks-push/)" in text and "beat (tasks-beat/)" in text
    assert "403 authentication_not_configured" in text


def test_check_names_only_the_endpoint_left_unprotected(closed, i3settings):
    i3settings(oidc_push_service_account_emails=(SERVICE_ACCOUNT,))
    (error,) = [e for e in check_endpoint_authentication() if e.id == "django_i3tasks.E040"]
    assert "beat (tasks-beat/)" in error.msg and "push (tasks-push/)" not in error.msg
    i3settings(beat_token="s3cret-beat")
    assert "django_i3tasks.E040" not in ids(check_endpoint_authentication())


def test_check_is_quiet_under_debug_and_with_allow_unauthenticated(closed, settings, i3settings):
    settings.DEBUG = True
    assert check_endpoint_authentication() == []
    settings.DEBUG = False
    i3settings(allow_unauthenticated=True)
    assert "django_i3tasks.E040" not in ids(check_endpoint_authentication())


@pytest.mark.django_db  # Django 6 runs its checks against the database
def test_check_fails_manage_py_check(closed):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with pytest.raises(SystemCheckError, match="authentication_not_configured"):
        call_command("check", "--tag", "security")


def test_open_status_and_health_warn_under_debug_false(i3settings, settings):
    errors = check_endpoint_authentication()
    assert ids(errors) == ["django_i3tasks.W021"]
    assert "status_token" in messages(errors)
    i3settings(status_token="status-secret")
    assert check_endpoint_authentication() == []
    i3settings(status_token=None)
    settings.DEBUG = True
    assert check_endpoint_authentication() == []


def test_nothing_to_protect_when_the_endpoints_are_not_routed(closed, settings):
    settings.ROOT_URLCONF = "tests.e2e.test_secure_defaults"
    assert check_endpoint_authentication() == []


urlpatterns: list = []  # the URLconf of the test above: the project routes none of ours


# --- separate push and beat accounts ------------------------------------------------------------


@pytest.fixture
def split_oidc(cert_server, i3settings):  # noqa: F811 - the imported fixture
    cert_server.reset()
    auth.certificates.clear()
    i3settings(allow_unauthenticated=False, oidc_certs_url=cert_server.url, oidc_audience=None,
               oidc_push_service_account_emails=(SERVICE_ACCOUNT,),
               oidc_beat_service_account_emails=(SCHEDULER_ACCOUNT,))
    yield
    auth.certificates.clear()


def _bearer(audience, email):
    return {"HTTP_AUTHORIZATION": f"Bearer {make_token(audience, email=email)}"}


def test_push_and_beat_accept_only_their_own_account(split_oidc):
    push = "http://testserver/i3/tasks-push/"
    beat = "http://testserver/i3/tasks-beat/"
    factory = RequestFactory()
    auth.authenticate_push(factory.post("/i3/tasks-push/", **_bearer(push, SERVICE_ACCOUNT)))
    auth.authenticate_beat(factory.post("/i3/tasks-beat/", **_bearer(beat, SCHEDULER_ACCOUNT)))
    with pytest.raises(AuthError, match="is not allowed"):
        auth.authenticate_push(factory.post("/i3/tasks-push/",
                                            **_bearer(push, SCHEDULER_ACCOUNT)))
    with pytest.raises(AuthError, match="is not allowed"):
        auth.authenticate_beat(factory.post("/i3/tasks-beat/", **_bearer(beat, SERVICE_ACCOUNT)))


def test_the_shared_list_still_means_both(split_oidc, i3settings):
    i3settings(oidc_push_service_account_emails=(), oidc_beat_service_account_emails=(),
               oidc_service_account_emails=(SERVICE_ACCOUNT,))
    factory = RequestFactory()
    beat = "http://testserver/i3/tasks-beat/"
    auth.authenticate_beat(factory.post("/i3/tasks-beat/", **_bearer(beat, SERVICE_ACCOUNT)))
    errors = check_settings()
    assert ids(errors) == ["django_i3tasks.W020"]
    assert "oidc_push_service_account_emails" in errors[0].hint
    assert "oidc_beat_service_account_emails" in errors[0].hint


# --- audience and names ------------------------------------------------------------------------


def test_default_audience_leaves_out_the_query_string(split_oidc):
    request = RequestFactory().post("/i3/tasks-push/?aud=https://attacker.example/")
    assert auth._expected_audience(request, None) == "http://testserver/i3/tasks-push/"
    token_for_url = _bearer("http://testserver/i3/tasks-push/", SERVICE_ACCOUNT)
    auth.authenticate_push(RequestFactory().post("/i3/tasks-push/?x=1", **token_for_url))
    token_with_query = _bearer("http://testserver/i3/tasks-push/?x=1", SERVICE_ACCOUNT)
    with pytest.raises(AuthError, match="audience"):
        auth.authenticate_push(RequestFactory().post("/i3/tasks-push/?x=1", **token_with_query))


@pytest.mark.parametrize("field, value", [
    ("task", "tests.testapp.tasks.add\n"),
    ("queue", "default\n"),
])
def test_names_with_a_trailing_newline_are_refused(field, value):
    from tests.unit.test_messages import make_message

    body = json.loads(make_message().to_json())
    body[field] = value
    with pytest.raises(InvalidMessage, match=field):
        TaskMessage.from_dict(body)


@pytest.mark.parametrize("change, check_id", [
    ({"namespace": "tests.i3\n"}, "E003"),
    ({"default_queue": dataclasses.replace(django_settings.I3TASKS.default_queue,
                                           queue_name="default\n")}, "E007"),
])
def test_settings_names_with_a_trailing_newline_are_errors(i3settings, change, check_id):
    i3settings(**change)
    assert f"django_i3tasks.{check_id}" in ids(check_settings())


# --- a Host outside ALLOWED_HOSTS ---------------------------------------------------------------


@pytest.mark.django_db
def test_bad_host_gets_the_json_answer_on_the_endpoints(settings):
    settings.ALLOWED_HOSTS = ["tasks.example.com"]
    client = Client()
    for path in ("/i3/tasks-push/", "/i3/tasks-beat/", "/i3/tasks-health/"):
        response = client.post(path, HTTP_HOST="attacker.example")
        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"] == "bad_host"
    # Every other URL keeps Django's own answer.
    other = client.get("/admin/", HTTP_HOST="attacker.example")
    assert other.status_code == 400 and other["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_status_without_a_token_logs_a_warning_once(caplog, monkeypatch):
    monkeypatch.setattr(auth, "_warned_open", __import__("threading").Event())
    with caplog.at_level("WARNING", logger="django_i3tasks.auth"):
        Client().get("/i3/tasks-health/")
        Client().get("/i3/tasks-health/")
    warnings = [r for r in caplog.records if "answer without a token" in r.getMessage()]
    assert len(warnings) == 1
    assert "I3TASKS.status_token" in warnings[0].getMessage()
