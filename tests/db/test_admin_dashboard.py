"""The admin dashboard: server-rendered SVG, linked from the app index, few queries."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.helpers import drain
from tests.testapp.tasks import add, always_fails

pytestmark = pytest.mark.django_db

URL = "/admin/django_i3tasks/dashboard/"


@pytest.fixture
def populated(no_publish):
    for i in range(5):
        add.delay(i, 1)
    always_fails.delay("dash")
    drain(no_publish)
    add.delay(100, 1)  # pending


def test_reverse_and_app_index_link(admin_client):
    assert reverse("admin:django_i3tasks_dashboard_changelist") == URL
    index = admin_client.get(reverse("admin:app_list", args=["django_i3tasks"]))
    assert index.status_code == 200 and URL in index.content.decode()


@pytest.mark.parametrize("window", ["1h", "24h"])
def test_dashboard_shows_the_window_in_at_most_10_queries(
    admin_client, populated, window, django_assert_max_num_queries
):
    admin_client.get(URL)  # the session and user are loaded once, like any admin page
    with django_assert_max_num_queries(10):
        page = admin_client.get(URL, {"window": window})
    assert page.status_code == 200
    html = page.content.decode()
    assert f"<strong>last {window}</strong>" in html
    main = html.split('id="content-main"')[1].split("<!-- END Content -->")[0]
    assert main.count('<svg class="i3-chart"') == 1  # the stacked chart
    assert main.count('<svg class="i3-spark"') == 2  # one sparkline per task
    assert "<script" not in main and "http" not in main  # no JavaScript, nothing fetched
    assert add.name in html and always_fails.name in html
    # 1 of 6 finished executions failed; the stacked chart has failed and success bars.
    assert "16.7%" in html and "1 of 6 finished executions" in html
    assert "#b91c1c" in html and "#15803d" in html
    assert "<td>default</td><td>pending</td><td>1</td>" in html


def test_dashboard_needs_the_view_permission(client, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(URL).status_code == 403
