"""tasks-metrics/: Prometheus counters fed by the signals, gauges read at scrape."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_i3tasks import metrics, signals, transport
from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.helpers import wait_for
from tests.testapp import tasks

TOKEN = "metrics-token-0123456789"


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/i3/tasks-metrics/", HTTP_X_I3TASKS_TOKEN=TOKEN)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def finished(samples, task, outcome) -> float:
    key = ("i3tasks_tries_finished_total",
           (("outcome", outcome), ("queue", "default"), ("task", task)))
    return samples.get(key, 0.0)


def test_receivers_are_the_packages_own_so_the_fast_path_stays():
    assert signals.package_receivers_only(signals.task_finished)
    assert signals.package_receivers_only(signals.task_started)


@pytest.mark.django_db(transaction=True)
def test_three_tasks_one_failing_for_good_through_a_real_push(push_queue, client, i3settings):
    i3settings(status_token=TOKEN)
    before = scrape(client)
    handles = [tasks.add.delay(1, 2), tasks.add.delay(3, 4), tasks.always_fails.delay("m")]
    transport.flush()
    wait_for(lambda: TaskExecution.objects.filter(
        pk__in=[h.id for h in handles],
        status__in=[ExecutionStatus.SUCCESS, ExecutionStatus.FAILED]).count() == 3, timeout=30)
    after = scrape(client)
    add, fails = tasks.add.name, tasks.always_fails.name
    assert finished(after, add, "success") - finished(before, add, "success") == 2
    assert finished(after, fails, "retry") - finished(before, fails, "retry") == 2
    assert finished(after, fails, "failed") - finished(before, fails, "failed") == 1
    assert finished(after, add, "failed") == finished(before, add, "failed")

    def delta(name, task):
        key = (name, (("queue", "default"), ("task", task)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("i3tasks_tasks_enqueued_total", add) == 2
    assert delta("i3tasks_tries_started_total", fails) == 3
    assert delta("i3tasks_try_duration_seconds_count", add) == 2
    assert delta("i3tasks_queue_delay_seconds_count", fails) == 3


@pytest.mark.django_db
def test_gauges_read_open_executions_from_the_database(client, i3settings, no_publish):
    i3settings(status_token=TOKEN)
    tasks.add.delay(1, 1)
    tasks.add.delay(2, 2)
    tasks.add.using(countdown=600).delay(3, 3)
    samples = scrape(client)
    assert samples[("i3tasks_executions", (("queue", "default"), ("status", "pending")))] == 2
    assert samples[("i3tasks_executions", (("queue", "default"), ("status", "scheduled")))] == 1
    assert samples[("i3tasks_oldest_pending_seconds", (("queue", "default"),))] >= 0


@pytest.mark.django_db
@pytest.mark.parametrize(("headers", "code"), [({}, 401),
                                                ({"HTTP_X_I3TASKS_TOKEN": "wrong"}, 403)])
def test_without_the_token_it_refuses(client, i3settings, headers, code):
    i3settings(status_token=TOKEN)
    response = client.get("/i3/tasks-metrics/", **headers)
    assert response.status_code == code and response.json()["status"] == "error"
    assert b"i3tasks_" not in response.content


@pytest.mark.django_db
def test_without_the_extra_it_answers_501_naming_it(client, monkeypatch):
    monkeypatch.setattr(metrics, "available", lambda: False)
    response = client.get("/i3/tasks-metrics/")
    assert response.status_code == 501
    assert response.json()["error"] == "metrics_unavailable"
    assert 'django-i3tasks[metrics]' in response.json()["detail"]


def test_outcome_labels():
    assert metrics.outcome("retry_scheduled", "builtins.ValueError") == "retry"
    assert metrics.outcome("failed", "django_i3tasks.exceptions.TimeLimitExceeded") == \
        "time_limit"
    assert metrics.outcome("cancelled", "") == "cancelled"
    assert metrics.outcome("success", "") == "success"


@pytest.mark.django_db
def test_publish_failures_are_counted_per_queue(client, i3settings, no_publish):
    from django_i3tasks import outbox

    i3settings(status_token=TOKEN)
    tasks.add.delay(5, 5)
    key = ("i3tasks_publish_failures_total", (("queue", "default"),))
    before = scrape(client).get(key, 0.0)
    outbox._publish_failed(no_publish[0], RuntimeError("Pub/Sub unavailable"))
    assert scrape(client)[key] - before == 1


SCRIPT = """
import django, sys
django.setup()
from django_i3tasks import metrics
metrics.connect()
metrics.on_enqueued(None, task_name="t", queue_name="q")
if sys.argv[1] == "scrape":
    sys.stdout.write(metrics.exposition()[0].decode())
"""


def test_multiprocess_mode_adds_up_every_process(tmp_path):
    """Two worker processes count, a third scrapes: the sum (PROMETHEUS_MULTIPROC_DIR)."""
    import subprocess
    import sys

    from tests.helpers import subprocess_env

    env = {**subprocess_env(), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", SCRIPT, "count"], env=env, check=True,
                       timeout=60)
    # The scraping process counts one more itself; only the counters are read (its
    # gauges would need the test database).
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace(
        "metrics.exposition()[0]", "metrics.counters_exposition()"), "scrape"], env=env,
        check=True, timeout=60, capture_output=True, text=True).stdout
    assert 'i3tasks_tasks_enqueued_total{queue="q",task="t"} 3.0' in out
