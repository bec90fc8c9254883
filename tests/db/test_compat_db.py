"""Projects written against 0.0.x/0.1.x keep working: their handles and the status by integer id."""

from __future__ import annotations

import json

import pytest


@pytest.mark.django_db
def test_0x_handle_attribute_names(no_publish):
    from tests.testapp import tasks

    handle = tasks.add.delay(1, 1)
    assert handle.task_execution_id == handle.id == handle.task_execution.pk
    assert handle.task_uuid == handle.uuid


@pytest.mark.django_db
def test_status_by_integer_id_only_behind_a_token(client, no_publish, i3settings):
    from tests.testapp import tasks

    handle = tasks.add.delay(1, 1)
    response = client.get(f"/i3/tasks-status/{handle.id}/")
    assert response.status_code == 400 and "status_token" in response.json()["detail"]
    i3settings(status_token="s3cret")
    response = client.get(f"/i3/tasks-status/{handle.id}/", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200, response.content
    assert json.loads(response.content)["execution"] == str(handle.uuid)
    huge = "9" * 40
    response = client.get(f"/i3/tasks-status/{huge}/", HTTP_X_I3TASKS_TOKEN="s3cret")
    assert response.status_code == 400
    assert client.get(f"/i3/tasks-status/{handle.id}/",
                      HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
