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


def test_every_try_carries_its_task_name(no_publish):
    """Each way a try is written copies the execution's task name: one ``.delay()`` (one
    statement on PostgreSQL), a bulk fan-out, a retry, a released chain step, and the failed
    try of a step whose hand-over could not be sent."""
    from django.db.models import F

    from django_i3tasks.lifecycle.graph import fail_unsent
    from django_i3tasks.models import TaskExecution, TaskExecutionTry, TaskGroup
    from tests.testapp.chain_tasks import link, member

    add.delay(1, 2)
    always_fails.delay("named")  # max_retries=2: two more tries
    member.map(range(3), group=TaskGroup.create(total_count=3))
    head = link.delay("a")
    head.then(link, "b")
    lost = head.then(link, "c")
    drain(no_publish)
    fail_unsent(TaskExecution.objects.create(task_name=link.name, queue_name="default",
                                             status="waiting").pk, RuntimeError("lost"))
    tries = TaskExecutionTry.objects.all()
    assert tries.filter(number=3, task_name=always_fails.name).exists()
    assert tries.filter(execution_id=lost.id, task_name=link.name).exists()
    assert tries.count() == 11  # 1 + 3 + 3 + 3 + 1
    assert not tries.exclude(task_name=F("execution__task_name")).exists()


def test_a_try_written_before_tries_had_a_task_name_is_shown_under_its_task(
    admin_client, populated
):
    """Tries written before migration 0013 have ""; the dashboard and ``i3tasks stats``
    label them by their execution."""
    from django.utils import timezone

    from django_i3tasks import stats
    from django_i3tasks.models import TaskExecutionTry

    TaskExecutionTry.objects.update(task_name="")
    html = admin_client.get(URL, {"window": "1h"}).content.decode()
    assert add.name in html and always_fails.name in html
    figures = stats.timings(timezone.now() - timezone.timedelta(hours=1))
    assert set(figures) == {add.name, always_fails.name}
    assert figures[add.name]["tries"] == 5
    window = stats.window_tries(timezone.now() - timezone.timedelta(hours=1), False)
    assert {task for _, task, _ in window["per_task"]} == {add.name, always_fails.name}


def test_the_window_settings_stay_inside_the_window_statement(populated):
    """On PostgreSQL the window statements run with more memory and without JIT; called in a
    transaction of the caller's (this test's), they leave its settings as they were."""
    from django.db import connection
    from django.utils import timezone

    from django_i3tasks import stats

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL settings")

    def settings() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('work_mem'), current_setting('jit')")
            return cursor.fetchone()

    assert connection.in_atomic_block
    before = settings()
    assert before[0] != "256MB"
    since = timezone.now() - timezone.timedelta(hours=1)
    assert stats.window_tries(since, False)["per_task"]
    assert stats.timings(since)
    assert settings() == before
