"""Two revisions of the package, in turn, in one run: what a change cost or saved.

Run: ``.venv/bin/python bench/ab.py BEFORE [AFTER] [--db postgres|sqlite] [--rounds 6]``.
``BEFORE`` and ``AFTER`` are git revisions (``AFTER`` defaults to the working tree); each is
checked out into a temporary worktree. Every round starts one child process per revision,
in alternating order, so a drift of the machine's speed hits both sides alike. A child uses
its revision's code, test settings and ``bench/harness.py`` (its own Pub/Sub emulator and a
throwaway test database) and measures, after a warm-up:

- ``.delay()``: the median wall time of ``N`` calls of ``tests.testapp.tasks.add``, messages
  really published;
- a push execution: the push view driven in process by Django's test client (decode, claim,
  run, record) for each of those executions: median wall time, and the process's CPU time
  per execution (every thread, the publisher's included);
- a beat minute with ``SCHEDULES`` settings schedules all due (the second call; the first
  fills the schedule state).

Printed: each round's figures, then per figure the median of the paired ratios
AFTER / BEFORE and their range. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = 400
SCHEDULES = 1000
FIGURES = ("delay_ms", "push_ms", "push_cpu_ms", "beat_ms")


def child(db: str) -> None:
    """Measure the revision in the current directory; print one JSON line."""
    tree = Path.cwd()
    sys.path[:0] = [str(tree / "bench"), str(tree)]
    import harness  # the revision's own

    def measure(db: str) -> None:
        import dataclasses
        from datetime import datetime, timedelta
        from datetime import timezone as dt_timezone

        from django.conf import settings
        from django.test import Client

        from django_i3tasks import beat, transport
        from django_i3tasks.models import TaskExecution
        from django_i3tasks.provisioning import ensure_pubsub
        from django_i3tasks.types import Schedule
        from tests.testapp import tasks

        try:
            from tests.helpers import push_envelope
        except ImportError:  # before the test tiers
            from tests.conftest import push_envelope

        def message(execution: TaskExecution) -> tuple[bytes, dict[str, str]]:
            from django_i3tasks.messages import TaskMessage

            if hasattr(TaskMessage, "of"):
                pk, number = execution.tries.values_list("pk", "number").get()
                return TaskMessage.of(execution, pk, number).encode()
            from django_i3tasks.lifecycle import message_for  # before the spec split

            return message_for(execution, execution.tries.get()).encode()

        ensure_pubsub()
        for i in range(50):
            tasks.add.delay(i, i)
        transport.flush()
        delays, handles = [], []
        for i in range(N):
            began = time.perf_counter()
            handles.append(tasks.add.delay(i, i))
            delays.append(time.perf_counter() - began)
        transport.flush()
        bodies = [push_envelope(*message(TaskExecution.objects.get(pk=h.id))) for h in handles]
        client = Client()
        pushes = []
        cpu = time.process_time()
        for body in bodies:
            began = time.perf_counter()
            response = client.post("/i3/tasks-push/", body, content_type="application/json")
            pushes.append(time.perf_counter() - began)
            assert response.status_code == 200 and response.json()["status"] == "success"
        cpu = time.process_time() - cpu
        transport.flush()

        base = settings.I3TASKS
        settings.I3TASKS = dataclasses.replace(base, schedules=tuple(
            Schedule("tests.testapp.beat_tasks", "tick", "* * * * *", [i], name=f"ab-{i}")
            for i in range(SCHEDULES)))
        beat.forget(keep_state=True)
        minute = datetime.now(dt_timezone.utc).replace(second=0, microsecond=0)
        beats = []
        for back in (3, 2):
            header = (minute - timedelta(minutes=back)).strftime("%Y-%m-%dT%H:%M:%SZ")
            began = time.perf_counter()
            response = client.post("/i3/tasks-beat/", HTTP_X_CLOUDSCHEDULER_SCHEDULETIME=header)
            beats.append(time.perf_counter() - began)
            assert response.status_code == 200
            assert len(response.json()["enqueued"]) == SCHEDULES
            transport.flush()
        settings.I3TASKS = base
        print("AB " + json.dumps({
            "delay_ms": statistics.median(delays) * 1000,
            "push_ms": statistics.median(pushes) * 1000,
            "push_cpu_ms": cpu / len(bodies) * 1000,
            "beat_ms": beats[1] * 1000,
        }), flush=True)

    harness.run(db, measure)


def checkout(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), revision],
                   check=True, capture_output=True)
    return into


def run_side(tree: Path, db: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--db", db], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
        timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("AB "):
            return json.loads(line[3:])
    raise RuntimeError(f"{tree}: no figures\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", nargs="?")
    parser.add_argument("after", nargs="?")
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.db)
        return
    if not args.before:
        parser.error("give the revision to compare with")
    scratch = Path(tempfile.mkdtemp(prefix="i3tasks-ab-"))
    trees = {"before": checkout(args.before, scratch / "before")}
    trees["after"] = checkout(args.after, scratch / "after") if args.after else ROOT
    labels = {"before": args.before, "after": args.after or "working tree"}
    print(f"# {args.db}: before = {labels['before']}, after = {labels['after']}; "
          f"{args.rounds} rounds, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    figures: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    try:
        for index in range(args.rounds):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            for side in order:
                figures[side].append(run_side(trees[side], args.db))
            print(f"round {index + 1}: " + "  ".join(
                f"{name} {figures['before'][-1][name]:.2f} -> {figures['after'][-1][name]:.2f}"
                for name in FIGURES), flush=True)
    finally:
        for side in ("before", "after"):
            if trees[side] != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(trees[side])], capture_output=True)
    print("\nafter / before, paired by round (below 1: the after side is faster):")
    for name in FIGURES:
        ratios = [a[name] / b[name] for a, b in zip(figures["after"], figures["before"],
                                                     strict=True)]
        print(f"  {name:<12} median {statistics.median(ratios):.3f}  range "
              f"{min(ratios):.3f}-{max(ratios):.3f}  (before median "
              f"{statistics.median(f[name] for f in figures['before']):.2f}, after median "
              f"{statistics.median(f[name] for f in figures['after']):.2f})")


if __name__ == "__main__":
    main()
