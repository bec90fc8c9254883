"""Pull worker throughput: 200 tasks of 50 ms, the new i3tasks_worker against 0.1.9's.

Run: ``.venv/bin/python bench/pull.py`` (both databases) or ``--db sqlite|postgres``.
Not part of the test suite. It makes everything it needs:

- its own Pub/Sub emulator and a throwaway database (``bench/harness.py``), shared by both
  sides: the new package's tables are ``django_i3tasks_*``, 0.1.9's are ``i3tasks_*``;
- a virtualenv with django-i3tasks 0.1.9 from PyPI (first run only), outside the repository:
  ``~/.cache/django-i3tasks/bench-old-venv`` or ``$I3TASKS_BENCH_OLD_VENV``. It gets the same
  Django, google-cloud-pubsub, grpcio, protobuf and psycopg versions as this environment.

New side: ``python -m django i3tasks_worker --queue heavy --concurrency 8`` on the test
settings; the tasks are ``tests.testapp.worker_tasks.nap(key, 0.05)``, enqueued with
``nap.starmap()`` (bulk rows, batched publish, every publish awaited).

Old side (``bench/pull_old/drive.py``, run in the 0.1.9 virtualenv): 0.1.9's documented pull
worker, ``manage.py i3tasks_worker --queue=heavy``, one process (``--old-workers N`` for
more). It has no concurrency setting: it pulls one message per synchronous Pull, runs it,
acks it, pulls again, and sleeps 1 s after an empty Pull. The task has the same body (sleep,
then insert one row); it is enqueued with 0.1.9's ``nap.delay()``, which awaits each publish
(0.1.9 has no bulk enqueue).

Database connections: the new worker runs with ``CONN_MAX_AGE = 60`` (what docs/worker.md
recommends for a busy worker: each thread keeps its connection); 0.1.9's worker keeps its one
connection for its whole life anyway. With ``CONN_MAX_AGE = 0`` the new worker opens a
connection per task (Django's per-request behaviour), which costs it about 20 % here.

On SQLite the database is in WAL mode (set by the test settings, and a property of the file,
so 0.1.9 runs on it too); the new worker's connections open IMMEDIATE transactions.

Each side: its worker is started and has run one warm-up task before the clock starts. Wall
time runs from the start of enqueueing (just before the first publish) to the last
``finished_at`` the side recorded for a successful run; tasks/s = tasks / wall time.
Target (issue 5): the new worker at least 6x 0.1.9's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, run  # noqa: E402

from django_i3tasks.testing.processes import OutputProcess, wait_until  # noqa: E402

TARGET = 6.0
OLD_VERSION = "0.1.9"
OLD_DIR = Path(__file__).resolve().parent / "pull_old"
OLD_VENV = Path(
    os.environ.get("I3TASKS_BENCH_OLD_VENV")
    or Path.home() / ".cache" / "django-i3tasks" / "bench-old-venv"
)
#: Distributions the 0.1.9 virtualenv gets at the versions installed here.
SHARED = ("Django", "google-cloud-pubsub", "grpcio", "protobuf")
WORKER_READY = "i3tasks_worker pid="


# --- the 0.1.9 virtualenv ---------------------------------------------------------------------


def old_requirements() -> list[str]:
    pins = [f"django-i3tasks=={OLD_VERSION}"]
    pins += [f"{name}=={metadata.version(name)}" for name in SHARED]
    try:
        pins.append(f"psycopg[binary]=={metadata.version('psycopg')}")
    except metadata.PackageNotFoundError:
        pass
    return pins


def ensure_old_venv() -> Path:
    """The 0.1.9 virtualenv's python; created or updated when its pins changed."""
    python = OLD_VENV / "bin" / "python"
    marker = OLD_VENV / "i3tasks-bench-requirements.txt"
    wanted = "\n".join(old_requirements()) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not python.exists():
        print(f"creating a virtualenv for django-i3tasks {OLD_VERSION} in {OLD_VENV}",
              file=sys.stderr, flush=True)
        OLD_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(OLD_VENV)], check=True)
    print(f"installing into {OLD_VENV}: {' '.join(wanted.split())}", file=sys.stderr,
          flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *wanted.split()], check=True)
    marker.write_text(wanted)
    return python


# --- the two sides ----------------------------------------------------------------------------


def run_new(args: argparse.Namespace) -> dict:
    from django.db import connection
    from django.db.models import Count, Max

    from django_i3tasks import outbox
    from django_i3tasks.models import TaskExecution
    from tests.helpers import subprocess_env
    from tests.testapp.models import Effect
    from tests.testapp.worker_tasks import nap

    worker = OutputProcess(
        [sys.executable, "-m", "django", "i3tasks_worker", "--settings", "tests.settings",
         "--queue", "heavy", "--concurrency", str(args.concurrency),
         "--status-interval", "3600"],
        {**subprocess_env(), "I3TASKS_TEST_CONN_MAX_AGE": "60"}, ROOT,
    )
    result: dict = {}
    try:
        worker.wait_for_line(WORKER_READY, timeout=60)
        nap.delay("warmup", 0.0)
        if not wait_until(lambda: TaskExecution.objects.filter(status="success").exists(),
                          60, 0.05, [worker]):
            raise RuntimeError("the new worker did not run the warm-up task:\n"
                               + "\n".join(worker.lines))
        TaskExecution.objects.all().delete()
        Effect.objects.all().delete()
        connection.close()

        started = time.time()
        with outbox.delivering(timeout=120) as delivery:
            nap.starmap([(f"new-{index}", args.seconds) for index in range(args.tasks)])
        published = not delivery.failed
        enqueued = time.time()

        succeeded = TaskExecution.objects.filter(status="success")
        done = wait_until(lambda: succeeded.count() >= args.tasks, args.timeout, args.poll,
                          [worker])
        last = succeeded.aggregate(last=Max("finished_at"))["last"]
        runs = Effect.objects.filter(key__startswith="new-")
        result.update(
            done=done and published,
            succeeded=succeeded.count(),
            started=started,
            enqueue_seconds=enqueued - started,
            last_recorded=last.timestamp() if last else None,
            effects=runs.count(),
            distinct_effects=runs.values("key").distinct().count(),
            twice=runs.values("key").annotate(n=Count("id")).filter(n__gt=1).count(),
            pids=sorted(set(runs.values_list("pid", flat=True))),
            not_success=dict(TaskExecution.objects.exclude(status="success")
                             .values_list("status").annotate(n=Count("id"))),
        )
    finally:
        code, took = worker.terminate(timeout=args.grace + 15)
        result.update(exit_codes=[code], stop_seconds=took, log=worker.lines[-5:])
    return result


def run_old(args: argparse.Namespace, python: Path) -> dict:
    from tests.helpers import subprocess_env

    env = subprocess_env()
    env["I3OLD_NAMESPACE"] = "bench.old"
    completed = subprocess.run(
        [str(python), str(OLD_DIR / "drive.py"), "--tasks", str(args.tasks),
         "--seconds", str(args.seconds), "--workers", str(args.old_workers),
         "--timeout", str(args.timeout), "--poll", str(args.poll)],
        cwd=OLD_DIR, env=env, capture_output=True, text=True, check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        raise RuntimeError(f"the 0.1.9 side failed (exit {completed.returncode}):\n"
                           f"{completed.stdout}\n{completed.stderr}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["log"] = completed.stderr.splitlines()[-5:]
    return result


# --- reporting --------------------------------------------------------------------------------


def wall(result: dict) -> float | None:
    if not result.get("done") or result.get("last_recorded") is None:
        return None
    return result["last_recorded"] - result["started"]


def row(label: str, result: dict, tasks: int) -> str:
    seconds = wall(result)
    ran = (f"{result['distinct_effects']}/{tasks}"
           + (f", {result['twice']} twice" if result["twice"] else ""))
    if seconds is None:
        figures = f"{'did not finish':>9} {result.get('succeeded', 0):>4}/{tasks} done"
    else:
        figures = f"{seconds:8.2f}  {tasks / seconds:8.1f}"
    return (f"{label:<44} {figures}  {result['enqueue_seconds']:8.2f}  {ran:>9}  "
            f"{len(result['pids']):>3}")


def measure(db: str, args: argparse.Namespace, python: Path) -> None:
    from django.db import connection

    from django_i3tasks.provisioning import ensure_pubsub

    ensure_pubsub()
    floor_new = args.tasks * args.seconds / args.concurrency
    floor_old = args.tasks * args.seconds / args.old_workers
    print(f"\n## {db} ({connection.vendor}): {args.tasks} tasks that sleep "
          f"{args.seconds * 1000:g} ms, one emulator, one database", flush=True)
    print("machine: {} cores, load average {:.2f} {:.2f} {:.2f} (1, 5, 15 min)".format(
        os.cpu_count(), *os.getloadavg()))
    new_label = f"new i3tasks_worker --concurrency {args.concurrency}"
    old_label = (f"{OLD_VERSION} i3tasks_worker, "
                 f"{args.old_workers} process{'es' if args.old_workers > 1 else ''}")
    ratios = []
    for round_ in range(1, args.rounds + 1):
        new = run_new(args)
        old = run_old(args, python)
        if args.rounds > 1:
            print(f"\nround {round_}/{args.rounds}")
        print(f"{'':<44} {'wall s':>8}  {'tasks/s':>8}  {'enqueue s':>8}  "
              f"{'ran once':>9}  {'pids':>3}")
        print(row(new_label, new, args.tasks))
        print(row(old_label, old, args.tasks))
        for label, result in (("new", new), (OLD_VERSION, old)):
            if result["exit_codes"] != [0] * len(result["exit_codes"]):
                print(f"  note: {label} worker exit codes on stop: {result['exit_codes']}")
            if result.get("not_success"):
                print(f"  note: {label} executions not successful: {result['not_success']}")
            if not result.get("done") or result["twice"] or \
                    result["distinct_effects"] != args.tasks:
                print(f"  note: {label} side incomplete; its last output lines:")
                for line in result["log"]:
                    print(f"    {line}")
        if "stop_seconds" in new:
            print(f"  new worker stopped on SIGTERM in {new['stop_seconds']:.2f} s "
                  f"(exit {new['exit_codes'][0]})")
        if wall(new) and wall(old):
            ratio = wall(old) / wall(new)
            ratios.append(ratio)
            print(f"ratio new/old: {ratio:.1f}x  (lower bounds on wall time from the task "
                  f"bodies alone: new {floor_new:.2f} s, old {floor_old:.2f} s)", flush=True)
    if ratios:
        ratio = statistics.median(ratios)
        if args.old_workers == 1:
            verdict = f"target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'MISSED'}"
        else:
            verdict = "the target is set against one 0.1.9 process"
        print(f"\n{db}: new worker is {ratio:.1f}x 0.1.9's throughput"
              f"{f' (median of {len(ratios)} rounds)' if len(ratios) > 1 else ''}; "
              f"{verdict}", flush=True)
    else:
        print(f"\n{db}: no ratio, a side did not finish", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.05, help="task body's sleep")
    parser.add_argument("--concurrency", type=int, default=8, help="new worker's")
    parser.add_argument("--old-workers", type=int, default=1,
                        help="0.1.9 worker processes (default 1: it has no concurrency)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="per side, seconds")
    parser.add_argument("--poll", type=float, default=0.25,
                        help="seconds between completion counts (the wall time comes from "
                             "the recorded finish times: polling less disturbs the run less)")
    parser.add_argument("--grace", type=float, default=30.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    python = ensure_old_venv()
    if args.db == "both":
        forwarded = [f"--{name.replace('_', '-')}={value}"
                     for name, value in vars(args).items() if name != "db"]
        for db in ("sqlite", "postgres"):
            subprocess.run([sys.executable, __file__, *forwarded, "--db", db], check=True)
        return
    run(args.db, lambda db: measure(db, args, python))


if __name__ == "__main__":
    main()
