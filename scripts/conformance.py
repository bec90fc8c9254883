"""The conformance leg: Django's own ``tests/tasks`` run against ``PubSubBackend``.

1. The sdist of the installed Django (``pip download --no-binary :all: --no-deps django==X``)
   is fetched once into a cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``, then
   ``django-i3tasks/django-sdist``).
2. Its ``tests/tasks/`` is written into a work directory as the package ``tasks`` (Django's
   tests name their tasks ``tasks.tasks.noop_task``), adapted by ``tests/conformance/adapt.py``.
3. Django's test runner runs the modules in two processes (settings
   ``tests.conformance.settings``): those of ImmediateBackend, the task API and custom backends
   on the inline outbox, DummyBackend's on the recording outbox.
4. The outcomes are compared with ``tests/conformance/expected_failures.txt``, the one list of
   tests allowed to fail, each with its reason. The leg fails when a test outside the list
   fails and when a listed test passes (the list only shrinks).

The last line printed is the summary the test command shows:
``conformance (Django X): P passed, F failed, E excepted``. Exit status 0 when F is 0 and no
listed test passed. Usage: ``python scripts/conformance.py [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "conformance" / "expected_failures.txt"
#: The kinds of reasons a test may be listed for; nothing else.
KINDS = {
    "priority": "priority refused: Pub/Sub delivers in no priority order",
    "queues": "queue names must be configured I3TASKS queues",
    "other-backend": "the test asserts another backend cannot do something this one can",
    "ready": "READY expected where the inline outbox runs the task at once",
    "sync-refresh": "sync refresh() (a database read) inside an async test",
}
#: (outbox, Django's test modules run on it).
RUNS = [
    ("inline", ["tasks.test_immediate_backend", "tasks.test_tasks", "tasks.test_custom_backend"]),
    ("recording", ["tasks.test_dummy_backend"]),
]


# --- the sdist and its adaptation ------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "django-i3tasks" / "django-sdist"


def sdist(version: str) -> Path:
    """Django ``version``'s sdist, downloaded into the cache the first time."""
    folder = cache_dir()
    for name in (f"django-{version}.tar.gz", f"Django-{version}.tar.gz"):
        if (folder / name).is_file():
            return folder / name
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
         "--no-deps", f"django=={version}", "--dest", str(folder)],
        check=True,
    )
    found = sorted(folder.glob(f"[dD]jango-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip downloaded no sdist of Django {version} into {folder}")
    return found[0]


def write_tests(archive: Path, work: Path) -> list[str]:
    """Write the adapted ``tests/tasks/*.py`` of ``archive`` into ``work/tasks``."""
    sys.path.insert(0, str(ROOT))
    from tests.conformance.adapt import adapt

    target = work / "tasks"
    target.mkdir(parents=True)
    written = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) == 4 and parts[1:3] == ("tests", "tasks") and parts[3].endswith(".py"):
                source = tar.extractfile(member)
                assert source is not None
                text = source.read().decode("utf-8")
                (target / parts[3]).write_text(adapt(parts[3], text), encoding="utf-8")
                written.append(parts[3])
    if "tasks.py" not in written:
        raise SystemExit(f"{archive} has no tests/tasks/")
    return sorted(written)


# --- one run, in its own process ---------------------------------------------------------------


class Outcomes(unittest.TestResult):
    """Each test's outcome; a test with a failing subtest failed."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, dict[str, str]] = {}

    def _set(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        current = self.outcomes.get(test.id())
        if current is None or current["outcome"] == "passed":
            self.outcomes[test.id()] = {"outcome": outcome, "detail": detail}

    def _why(self, err: object, test: unittest.TestCase) -> str:
        text = self._exc_info_to_string(err, test).strip()  # type: ignore[arg-type]
        return text.splitlines()[-1][:300] if text else ""

    def addSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802 - unittest's name
        self._set(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: object) -> None:  # noqa: N802
        self._set(test, "failed", self._why(err, test))

    def addError(self, test: unittest.TestCase, err: object) -> None:  # noqa: N802
        self._set(test, "failed", self._why(err, test))

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase,  # noqa: N802
                   err: object) -> None:
        if err is not None:
            self._set(test, "failed", f"{subtest.id()}: {self._why(err, test)}")

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:  # noqa: N802
        self._set(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: object) -> None:  # noqa: N802
        self._set(test, "passed")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:  # noqa: N802
        self._set(test, "failed", "unexpected success")


def run(modules: list[str], out: Path) -> None:
    """Run Django's test ``modules`` with Django's runner (test database, checks) and write
    every test's outcome to ``out`` as JSON."""
    import django
    from django.test.runner import DiscoverRunner

    django.setup()
    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    suite = runner.build_suite(modules)
    databases = runner.get_databases(suite)
    old_config = runner.setup_databases(aliases=databases)
    try:
        runner.run_checks(databases)
        result = Outcomes()
        suite.run(result)
    finally:
        runner.teardown_databases(old_config)
        runner.teardown_test_environment()
    out.write_text(json.dumps(result.outcomes, indent=1), encoding="utf-8")


# --- comparing with the list --------------------------------------------------------------------


def expected_failures() -> dict[str, str]:
    """Test id -> reason, from the list; a line whose kind is not one of ``KINDS`` is an
    error."""
    listed: dict[str, str] = {}
    for number, line in enumerate(EXPECTED.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        test_id, _, reason = line.partition(" ")
        kind = reason.strip().partition(":")[0]
        if kind not in KINDS:
            raise SystemExit(f"{EXPECTED.name}:{number}: kind {kind!r} is not one of "
                             f"{', '.join(sorted(KINDS))}")
        listed[test_id] = reason.strip()
    return listed


def compare(outcomes: dict[str, dict[str, str]], listed: dict[str, str],
            version: str) -> int:
    passed = [t for t, o in outcomes.items() if o["outcome"] == "passed"]
    failed = [t for t, o in outcomes.items() if o["outcome"] == "failed"]
    skipped = [t for t, o in outcomes.items() if o["outcome"] == "skipped"]
    excepted = [t for t in failed if t in listed]
    unexpected = [t for t in failed if t not in listed]
    now_passing = [t for t in passed if t in listed]
    missing = [t for t in listed if t not in outcomes]
    for test_id in sorted(excepted):
        print(f"  excepted  {test_id}  [{listed[test_id].partition(':')[0]}]")
    for test_id in sorted(unexpected):
        print(f"  FAILED    {test_id}\n            {outcomes[test_id]['detail']}")
    for test_id in sorted(now_passing):
        print(f"  PASSES    {test_id}: listed as allowed to fail; remove it from "
              f"{EXPECTED.name}")
    for test_id in sorted(missing):
        print(f"  MISSING   {test_id}: listed, but no such test ran; remove it from "
              f"{EXPECTED.name}")
    status = 1 if unexpected or now_passing or missing else 0
    extra = f", {len(skipped)} skipped" if skipped else ""
    not_failing = len(now_passing) + len(missing)
    verdict = f"; {not_failing} listed test(s) not failing" if not_failing else ""
    print(f"conformance (Django {version}): {len(passed)} passed, {len(unexpected)} failed, "
          f"{len(excepted)} excepted{extra}{verdict}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the adapted tests here and keep them")
    parser.add_argument("--run", nargs="+", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        run(args.run, args.out)
        return 0

    import django

    version = django.get_version()
    if django.VERSION < (6, 0):
        print(f"conformance (Django {version}): skipped, Django's tasks tests ship with 6.0+")
        return 0
    listed = expected_failures()
    work = args.keep or Path(tempfile.mkdtemp(prefix="i3tasks-conformance-"))
    written = write_tests(sdist(version), work)
    print(f"Django {version}: tests/tasks/{{{','.join(written)}}} adapted into {work}/tasks")
    outcomes: dict[str, dict[str, str]] = {}
    for outbox, modules in RUNS:
        out = work / f"outcomes-{outbox}.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(work), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "tests.conformance.settings",
            "I3TASKS_CONFORMANCE_OUTBOX": outbox,
            "I3TASKS_SKIP_STARTUP_PROVISIONING": "1",
        }
        print(f"{outbox} outbox: {' '.join(modules)}", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--run", *modules, "--out", str(out)], env=env,
            cwd=work,
        )
        if done.returncode != 0 or not out.is_file():
            print(f"conformance (Django {version}): the {outbox} run did not finish "
                  f"(exit {done.returncode})")
            return 1
        outcomes.update(json.loads(out.read_text(encoding="utf-8")))
    return compare(outcomes, listed, version)


if __name__ == "__main__":
    sys.exit(main())
