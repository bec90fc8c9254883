"""What every benchmark needs: its own Pub/Sub emulator, a throwaway test database (the test
suite's settings, ``--db sqlite|postgres``) and query counting that separates transaction
control from data statements."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def is_control(sql: str) -> bool:
    return sql.split(None, 1)[0].upper() in ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT")


def count(captured: Any) -> tuple[int, int]:
    """(all statements, data statements) of a ``CaptureQueriesContext``."""
    statements = [q["sql"] for q in captured.captured_queries]
    return len(statements), sum(not is_control(s) for s in statements)


def run(db: str, measure: Callable[[str], None]) -> None:
    """Start the emulator, set Django up on a fresh test database, call ``measure(db)``."""
    os.environ["I3TASKS_TEST_DB"] = db
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    sys.path.insert(0, str(ROOT))
    from django_i3tasks.testing.emulator import PubSubEmulator

    emulator = PubSubEmulator().start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    try:
        import django

        django.setup()
        from django.test.utils import (
            setup_databases,
            setup_test_environment,
            teardown_databases,
        )

        setup_test_environment()
        old = setup_databases(verbosity=0, interactive=False)
        try:
            measure(db)
        finally:
            teardown_databases(old, verbosity=0)
    finally:
        from django_i3tasks import transport

        transport.flush()
        emulator.stop()


def main(script: str, description: str, measure: Callable[[str], None]) -> None:
    """``--db sqlite|postgres|both`` (both: one subprocess per database)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    if args.db == "both":
        for db in ("sqlite", "postgres"):
            subprocess.run([sys.executable, script, "--db", db], check=True)
        return
    run(args.db, measure)
