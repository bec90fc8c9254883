"""``manage.py i3tasks list|show|retry|cancel|stats`` on a populated database."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_i3tasks.models import ExecutionStatus, TaskExecution
from tests.helpers import drain, subprocess_env
from tests.testapp.chain_tasks import link
from tests.testapp.tasks import add, always_fails

pytestmark = pytest.mark.django_db


def i3tasks(capsys, *args: str) -> tuple[int, str]:
    """Run the command; its exit code and output."""
    try:
        call_command("i3tasks", *args)
        code = 0
    except CommandError as exc:
        code = exc.returncode
    return code, capsys.readouterr().out


@pytest.fixture
def populated(no_publish):
    """Three successes, one failure for good (three tries), one pending, one chain."""
    done = [add.delay(i, 1) for i in range(3)]
    failed = always_fails.delay("cli")
    first = add.delay(10, 1)
    first.then(link, "after")
    drain(no_publish)
    pending = add.delay(99, 1)
    return {"done": done, "failed": failed, "pending": pending, "chain": first}


def test_list_filters_and_json(populated, capsys):
    code, out = i3tasks(capsys, "list", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 7
    assert rows[0]["uuid"] == str(populated["pending"].uuid)  # newest first
    code, out = i3tasks(capsys, "list", "--status", "failed", "--json")
    assert [r["uuid"] for r in json.loads(out)] == [str(populated["failed"].uuid)]
    assert json.loads(out)[0]["tries"] == 3
    code, out = i3tasks(capsys, "list", "--task", add.name, "--since", "1h", "--limit", "2")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["uuid", "task", "status"]
    assert len(out.splitlines()) == 3
    assert i3tasks(capsys, "list", "--queue", "heavy")[0] == 1  # nothing matched
    assert i3tasks(capsys, "list", "--status", "bogus")[0] == 2
    assert i3tasks(capsys, "list", "--since", "yesterday")[0] == 2


def test_show_has_tries_errors_result_chain(populated, capsys):
    code, out = i3tasks(capsys, "show", str(populated["failed"].uuid), "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "failed" and len(data["tries"]) == 3
    assert {t["error_type"] for t in data["tries"]} == {"builtins.ValueError"}
    assert "boom cli" in data["tries"][-1]["error_message"]
    code, out = i3tasks(capsys, "show", str(populated["chain"].uuid), "--json")
    data = json.loads(out)
    assert data["result"] == {"value": 11, "is_repr": False}
    assert len(data["chain"]["next"]) == 1
    code, out = i3tasks(capsys, "show", str(populated["failed"].uuid))
    assert code == 0 and "traceback of try 3" in out and "ValueError" in out
    assert i3tasks(capsys, "show", str(uuid.uuid4()))[0] == 1
    assert i3tasks(capsys, "show", "not-a-uuid")[0] == 2


def test_retry_by_uuid_and_failed(populated, capsys, no_publish):
    failed = populated["failed"]
    code, out = i3tasks(capsys, "retry", str(failed.uuid), "--json")
    assert code == 0 and json.loads(out)["retried"] == [str(failed.uuid)]
    assert TaskExecution.objects.get(uuid=failed.uuid).status == ExecutionStatus.PENDING
    drain(no_publish)
    assert TaskExecution.objects.get(uuid=failed.uuid).status == ExecutionStatus.FAILED
    code, out = i3tasks(capsys, "retry", "--failed", "--task", always_fails.name,
                        "--since", "1h")
    assert code == 0 and out.startswith("retried 1")
    assert i3tasks(capsys, "retry", "--failed", "--task", add.name)[0] == 1  # none failed
    assert i3tasks(capsys, "retry", str(uuid.uuid4()))[0] == 1
    assert i3tasks(capsys, "retry")[0] == 2
    assert i3tasks(capsys, "retry", str(failed.uuid), "--failed")[0] == 2


def test_cancel(populated, capsys):
    pending = populated["pending"]
    code, out = i3tasks(capsys, "cancel", str(pending.uuid), "--json")
    assert code == 0 and json.loads(out)["cancelled"] == [str(pending.uuid)]
    assert TaskExecution.objects.get(uuid=pending.uuid).status == ExecutionStatus.CANCELLED
    code, out = i3tasks(capsys, "cancel", str(populated["done"][0].uuid))
    assert code == 1 and "already finished" in out
    assert i3tasks(capsys, "cancel", str(uuid.uuid4()))[0] == 1


def test_stats(populated, capsys):
    code, out = i3tasks(capsys, "stats", "--since", "1h", "--json")
    rows = {r["task"]: r for r in json.loads(out)}
    assert code == 0
    assert rows[add.name]["counts"] == {"success": 4, "pending": 1}
    assert rows[always_fails.name]["failure_rate"] == 1.0
    assert rows[always_fails.name]["tries"] == 3
    assert rows[add.name]["failure_rate"] == 0.0
    for key in ("p50_duration", "p95_duration", "p50_delay", "p95_delay"):
        assert rows[add.name][key] is not None and rows[add.name][key] >= 0
    code, out = i3tasks(capsys, "stats")
    assert code == 0 and "p95 delay" in out and always_fails.name in out
    assert i3tasks(capsys, "stats", "--since", "0h")[0] == 2


@pytest.mark.django_db(transaction=True)
def test_exit_codes_from_a_real_process():
    def run(*args: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "django", "i3tasks", *args], env=subprocess_env(),
            capture_output=True, timeout=60,
        ).returncode

    assert run("frobnicate") == 2
    assert run("show", "not-a-uuid") == 2
