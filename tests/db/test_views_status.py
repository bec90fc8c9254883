"""The status endpoint."""

import json
import uuid

import pytest

from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def get(client, path, **headers):
    response = client.get(path, headers=headers)
    assert response["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.content)


def test_status_of_a_finished_execution(client, i3settings):
    i3settings(force_sync=True)
    handle = tasks.fails_once.delay("st")
    code, body = get(client, f"/i3/tasks-status/{handle.uuid}/")
    assert code == 200
    assert body["status"] == "success" and body["state"] == "success"
    assert body["task"] == "tests.testapp.tasks.fails_once"
    assert [t["status"] for t in body["tries"]] == ["failed", "success"]
    assert body["tries"][0]["error_type"] == "builtins.RuntimeError"
    assert body["result"] == {"value": "st", "is_repr": False}


def test_pending_execution(client):
    handle = tasks.add.delay(1, 1)
    code, body = get(client, f"/i3/tasks-status/{handle.uuid}/")
    assert code == 200 and body["status"] == "pending" and body["result"] is None


def test_unknown_and_invalid_ids(client):
    assert get(client, f"/i3/tasks-status/{uuid.uuid4()}/")[0] == 404
    code, body = get(client, "/i3/tasks-status/not-a-uuid/")
    assert code == 400 and body["error"] == "invalid_uuid"


def test_wrong_method(client):
    response = client.post(f"/i3/tasks-status/{uuid.uuid4()}/")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_token_is_required_when_configured(client, i3settings):
    i3settings(status_token="s3cret")
    path = f"/i3/tasks-status/{uuid.uuid4()}/"
    assert get(client, path)[0] == 401
    assert get(client, path, X_I3Tasks_Token="wrong")[0] == 403
    assert get(client, f"{path}?token=s3cret")[0] == 401  # never from the query string
    assert get(client, path, X_I3Tasks_Token="s3cret")[0] == 404
