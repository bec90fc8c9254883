"""The package as users get it: build the wheel and the sdist, check their metadata, install the
wheel (not editable) into a clean virtualenv, and run a small project from it.

    python scripts/wheel_smoke.py [--keep]

Steps, each printed: ``python -m build``; ``twine check``; every file tracked under
``django_i3tasks/`` is in the wheel and in the sdist (a forgotten migration, static file,
``py.typed`` or emulator file fails here, not for users); a new virtualenv with only the wheel
and its dependencies; from a directory outside the checkout: the emulator check, ``migrate``,
``check``, ``i3tasks_ensure_pubsub`` then ``--check``, and one task end to end (``.delay()``
-> Python emulator -> push to ``runserver`` -> result). Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "django_i3tasks"


def step(text: str) -> None:
    print(f"-- {text}", flush=True)


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            **kwargs)
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-4000:])
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"FAILED ({result.returncode}): {' '.join(map(str, command))}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracked_package_files() -> set[str]:
    """Files of the package in the checkout: git's list, else the tree (no caches)."""
    try:
        listed = subprocess.run(["git", "ls-files", PACKAGE], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(path.relative_to(ROOT)) for path in (ROOT / PACKAGE).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts]
    return {name for name in listed if (ROOT / name).is_file()}


def check_contents(wheel: Path, sdist: Path) -> None:
    wanted = tracked_package_files()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for label, have in (("wheel", in_wheel), ("sdist", in_sdist)):
        missing = sorted(wanted - have)
        if missing:
            raise SystemExit(f"FAILED: the {label} lacks {len(missing)} package file(s): "
                             + ", ".join(missing[:20]))
    extra = sorted(name for name in wanted if not name.endswith(".py"))
    print(f"   {len(wanted)} package files in both, among them: {', '.join(extra)}")


SETTINGS = """
from django_i3tasks.types import I3TasksSettings, PushQueue

SECRET_KEY = "wheel-smoke-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "smoke.urls"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth",
                  "django.contrib.admin", "django.contrib.sessions",
                  "django.contrib.messages", "django_i3tasks", "smoke"]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
              "django.middleware.common.CommonMiddleware",
              "django.contrib.auth.middleware.AuthenticationMiddleware",
              "django.contrib.messages.middleware.MessageMiddleware"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "smoke.sqlite3"}}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PUBSUB_CONFIG = {{"EMULATOR": True, "HOST": "{emulator}", "PROJECT_ID": "wheel-smoke",
                 "CREDENTIALS": None}}
I3TASKS = I3TasksSettings(
    namespace="smoke",
    default_queue=PushQueue("default", "push", push_endpoint="{push}",
                            ack_deadline_seconds=30),
    task_modules=("smoke.jobs",),
    allow_unauthenticated=True,  # the emulator sends no OIDC token
    status_token="smoke-status-token",
)
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {{"context_processors": [
                  "django.contrib.auth.context_processors.auth",
                  "django.contrib.messages.context_processors.messages",
                  "django.template.context_processors.request"]}}}}]
"""

URLS = """
from django.urls import include, path

urlpatterns = [path("i3/", include("django_i3tasks.urls"))]
"""

JOBS = """
from django_i3tasks import TaskDecorator


@TaskDecorator
def add(a, b):
    return a + b
"""

END_TO_END = """
import django_i3tasks
from smoke.jobs import add

assert "site-packages" in django_i3tasks.__file__, django_i3tasks.__file__
handle = add.delay(2, 3)
print("result", handle.wait_result(timeout=90))
"""


def write_project(where: Path, emulator: str, push: str) -> None:
    (where / "smoke").mkdir(parents=True)
    (where / "smoke" / "__init__.py").write_text("")
    (where / "smoke" / "settings.py").write_text(SETTINGS.format(emulator=emulator, push=push))
    (where / "smoke" / "urls.py").write_text(URLS)
    (where / "smoke" / "jobs.py").write_text(JOBS)


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"FAILED: {what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"FAILED: {what} did not listen on port {port} within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="i3tasks-wheel-"))
    processes: list[subprocess.Popen] = []
    try:
        step("python -m build (wheel and sdist)")
        dist = work / "dist"
        run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=work)
        (wheel,) = dist.glob("*.whl")
        (sdist,) = dist.glob("*.tar.gz")
        print(f"   {wheel.name}, {sdist.name}")
        step("twine check")
        run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
        step("package files in the wheel and the sdist")
        check_contents(wheel, sdist)

        step("a clean virtualenv with the wheel (not editable)")
        venv = work / "venv"
        run(sys.executable, "-m", "venv", venv)
        python = venv / "bin" / "python"
        run(python, "-m", "pip", "install", "-q", wheel)

        project = work / "project"
        emulator_port, server_port = free_port(), free_port()
        emulator = f"127.0.0.1:{emulator_port}"
        write_project(project, emulator, f"http://127.0.0.1:{server_port}/i3/tasks-push/")
        env = {key: value for key, value in os.environ.items()
               if key not in ("PYTHONPATH", "PUBSUB_EMULATOR_HOST", "DJANGO_SETTINGS_MODULE")}
        env.update(DJANGO_SETTINGS_MODULE="smoke.settings", PYTHONPATH=str(project),
                   I3TASKS_EMULATOR="python", PYTHONUNBUFFERED="1")
        django = [python, "-m", "django"]

        step("python -m django_i3tasks.testing.emulator --check")
        print("   " + run(python, "-m", "django_i3tasks.testing.emulator", "--check",
                          cwd=project, env=env).stdout.strip())
        step("migrate")
        run(*django, "migrate", "-v", "0", cwd=project, env=env)
        step("check (system checks, security tag included)")
        run(*django, "check", "--fail-level", "WARNING", cwd=project, env=env)

        step("one task end to end: .delay() -> Python emulator -> push -> runserver")
        log = (work / "emulator.log").open("w")
        processes.append(subprocess.Popen(
            [python, "-m", "django_i3tasks.testing.emulator", "--kind", "python",
             "--port", str(emulator_port)], cwd=project, env=env, stdout=log,
            stderr=subprocess.STDOUT))
        wait_for_port(emulator_port, processes[-1], "the emulator")
        server_log = (work / "runserver.log").open("w")
        processes.append(subprocess.Popen(
            [*django, "runserver", "--noreload", f"127.0.0.1:{server_port}"], cwd=project,
            env={**env, "I3TASKS_SKIP_STARTUP_PROVISIONING": "1"}, stdout=server_log,
            stderr=subprocess.STDOUT))
        wait_for_port(server_port, processes[-1], "runserver")
        run(*django, "i3tasks_ensure_pubsub", cwd=project, env=env)
        gate = run(*django, "i3tasks_ensure_pubsub", "--check", cwd=project, env=env)
        print("   " + gate.stdout.strip())
        result = run(python, "-c", f"import django; django.setup()\n{END_TO_END}", cwd=project,
                     env=env, timeout=180)
        if "result 5" not in result.stdout:
            raise SystemExit(f"FAILED: the task's result: {result.stdout!r}")
        print(f"   add.delay(2, 3) -> {result.stdout.split()[-1]} (from the installed wheel)")
        print(f"wheel smoke test passed in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
