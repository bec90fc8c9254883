"""The demo, end to end: emulator (Python or Google's, see I3TASKS_EMULATOR), migrate,
provision, serve the push view, enqueue, report.

Run through ``bash scripts/demo.sh``. Everything it starts (the Pub/Sub emulator, the Django
server) is stopped when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # the server answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def main() -> int:
    from django_i3tasks.testing.emulator import PubSubEmulator

    workdir = Path(tempfile.mkdtemp(prefix="i3tasks-demo-"))
    port = free_port()
    print(f"== starting the Pub/Sub emulator (log: {workdir / 'emulator.log'})")
    emulator = PubSubEmulator(log_path=workdir / "emulator.log").start()
    env = {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": emulator.endpoint,
        "DEMO_DB": str(workdir / "demo.sqlite3"),
        "DEMO_PUSH_ENDPOINT": f"http://127.0.0.1:{port}/i3/tasks-push/",
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    server = worker = None
    try:
        manage = [sys.executable, str(HERE / "manage.py")]
        print(f"== {emulator.kind} emulator at {emulator.endpoint}; "
              f"migrating SQLite at {env['DEMO_DB']}")
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True)
        print("== i3tasks_ensure_pubsub")
        subprocess.run([*manage, "i3tasks_ensure_pubsub"], env=env, check=True)
        print(f"== serving the push view on http://127.0.0.1:{port}/i3/tasks-push/")
        server_log = open(workdir / "server.log", "w")  # noqa: SIM115 - closed with the server
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            env=env, stdout=server_log, stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{port}/i3/tasks-push/")
        print("== starting i3tasks_worker --queue heavy (the pull queue)")
        worker_log = open(workdir / "worker.log", "w")  # noqa: SIM115 - closed with the worker
        worker = subprocess.Popen(
            [*manage, "i3tasks_worker", "--queue", "heavy", "--concurrency", "4"],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT,
        )
        return enqueue_and_report(workdir, port)
    finally:
        if worker is not None:
            print("== stopping the worker (SIGTERM: graceful)")
            worker.terminate()
            try:
                worker.wait(40)
            except subprocess.TimeoutExpired:
                worker.kill()
            stopped = [line for line in (workdir / "worker.log").read_text().splitlines()
                       if line.startswith("stopped:")]
            print(f"   worker {stopped[-1] if stopped else 'log: ' + str(workdir)}")
        print("== stopping the server and the emulator")
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        emulator.stop()


def enqueue_and_report(workdir: Path, port: int) -> int:
    import django

    django.setup()
    from demo_app import tasks

    from django_i3tasks import TaskGroup, transport
    from django_i3tasks.models import TaskExecution

    print("== enqueueing")
    tasks.add.delay(2, 3)
    tasks.greet.delay("newcomer")
    tasks.flaky.delay(7)
    tasks.broken.delay()
    chain = tasks.add.delay(1, 1)
    chain.then(tasks.add, 10, 10).then(tasks.greet, "chain")
    group = TaskGroup.create(callback=tasks.summarize.build_chain("the dice"), total_count=3)
    tasks.roll.starmap([()] * 3, group=group)  # bulk fan-out: three roll() members
    tasks.crunch.map([100_000, 200_000])  # the pull queue: the worker runs these
    transport.flush()
    # What Cloud Scheduler does every minute: the heartbeat schedule's slot is enqueued once.
    beat_url = f"http://127.0.0.1:{port}/i3/tasks-beat/"
    for _ in range(2):
        request = urllib.request.Request(beat_url, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        print(f"== POST tasks-beat/: enqueued {[e['schedule'] for e in answer['enqueued']]}, "
              f"unchanged {answer['unchanged']}")

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        open_ = TaskExecution.objects.filter(status__in=["pending", "waiting"]).count()
        if open_ == 0:
            break
        time.sleep(0.5)
    print()
    print(f"{'task':26} {'status':8} {'tries':22} result / error")
    ok = True
    for execution in TaskExecution.objects.order_by("pk"):
        tries = list(execution.tries.order_by("number"))
        try_text = ",".join(
            f"{t.number}:{t.status}"
            + (f"({(t.finished_at - t.started_at).total_seconds() * 1000:.0f}ms)"
               if t.started_at and t.finished_at else "")
            for t in tries
        )
        result = getattr(execution, "result", None)
        if result is not None:
            outcome = repr(result.value)
        elif tries and tries[-1].error_type:
            outcome = f"{tries[-1].error_type}: {tries[-1].error_message}"
        else:
            outcome = ""
        print(f"{execution.task_name.removeprefix('demo_app.tasks.'):26} {execution.status:8} "
              f"{try_text:22} {outcome}")
        expected = "failed" if execution.task_name.endswith(".broken") else "success"
        ok = ok and execution.status == expected
    group.refresh_from_db()
    print(f"\ngroup: {group.status} ({group.succeeded_count}/{group.total_count})")
    print(f"logs in {workdir}")
    if not ok:
        print("DEMO FAILED: some execution did not reach its expected status")
        return 1
    print("demo finished: every task ran as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
