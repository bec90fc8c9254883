"""Run a Pub/Sub emulator for tests, the demo and local development: ours in Python, or
Google's official one in Java.

``I3TASKS_EMULATOR`` (or ``kind=``) chooses: ``python`` (``django_i3tasks.testing.pubsub``,
needs nothing but this package), ``java`` (Google's emulator; an error when it is missing) or
``auto``, the default: Java when its jar, ``java`` and ``javac`` are found, else Python.

Google's emulator jar comes with the gcloud SDK (``gcloud components install
pubsub-emulator``, or the Debian package ``google-cloud-cli-pubsub-emulator`` from Google's apt
repository). It is started directly with ``java`` (the ``gcloud`` wrapper would leave the Java
process behind when killed), with a small class of ours first on the classpath that fixes the
jar's stream-close bug (see ``java-emulator-fix/io/grpc/InternalStatus.java``).

Either kind runs in a child process of its own (``PubSubEmulator().start()``, ``.endpoint``,
``.kind``, ``.stop()``), started on a free port and stopped with its whole process group.
``python -m django_i3tasks.testing.emulator [--host H] [--port N] [--kind K] [--check]`` serves
in the foreground, prints ``PUBSUB_EMULATOR_HOST=host:port`` once ready and stops cleanly on
SIGTERM; ``--check`` says which kind would run, and why.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KIND_ENV = "I3TASKS_EMULATOR"
KINDS = ("python", "java", "auto")
JAR_ENV = "I3TASKS_PUBSUB_EMULATOR_JAR"
SDK_ROOT_ENV = "I3TASKS_GCLOUD_SDK_ROOT"
CACHE_ENV = "I3TASKS_CACHE_DIR"
JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
#: Package data, in a folder whose name is no Python identifier, so it is never importable
#: (a plain ``java/io/grpc`` folder would be an implicit namespace package).
FIX_SOURCE = Path(__file__).with_name("java-emulator-fix") / "io" / "grpc" / "InternalStatus.java"
INSTALL_HINT = (
    "Install it with 'gcloud components install pubsub-emulator' or the Debian package "
    "'google-cloud-cli-pubsub-emulator' from Google's apt repository, or point "
    f"{JAR_ENV} at the jar."
)


class EmulatorNotFound(RuntimeError):
    """The emulator jar, java or javac is missing."""


class EmulatorError(RuntimeError):
    """The emulator did not start, or the requested kind is not one we know."""


def requested_kind(kind: str | None = None) -> str:
    """``kind``, else ``$I3TASKS_EMULATOR``, else ``auto``; EmulatorError when unknown."""
    value = (kind or os.environ.get(KIND_ENV) or "auto").strip().lower()
    if value not in KINDS:
        raise EmulatorError(f"{KIND_ENV}={value!r} is not one of {', '.join(KINDS)}")
    return value


def choose_kind(kind: str | None = None, jar: Path | str | None = None,
                java: str = "java") -> tuple[str, str]:
    """The kind of emulator that would run (``python`` or ``java``) and why. With ``java``
    requested, a missing jar or JDK raises EmulatorNotFound; with ``auto`` it means Python."""
    wanted = requested_kind(kind)
    if wanted == "python":
        return "python", f"{KIND_ENV}=python"
    try:
        found = Path(jar) if jar else find_emulator_jar()
        if not (shutil.which(java) or os.path.isfile(java)):
            _require("java")
        compile_stream_close_fix(found)
    except (EmulatorNotFound, EmulatorError) as exc:
        if wanted == "java":
            raise
        return "python", f"Google's emulator is not usable here: {exc}"
    return "java", f"Google's emulator {found}"


def _sdk_roots() -> list[Path]:
    roots = []
    if os.environ.get(SDK_ROOT_ENV):
        roots.append(Path(os.environ[SDK_ROOT_ENV]))
    if shutil.which("gcloud"):
        try:
            out = subprocess.run(
                ["gcloud", "info", "--format=value(installation.sdk_root)"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout.strip()
            if out:
                roots.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    roots.append(Path("/usr/lib/google-cloud-sdk"))
    return roots


def find_emulator_jar() -> Path:
    """The emulator jar: ``$I3TASKS_PUBSUB_EMULATOR_JAR``, else under the gcloud SDK root."""
    explicit = os.environ.get(JAR_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise EmulatorNotFound(f"{JAR_ENV}={explicit} is not a file. {INSTALL_HINT}")
        return path
    searched = []
    for root in _sdk_roots():
        jars = sorted(root.glob(JAR_GLOB), key=lambda p: p.stat().st_mtime)
        searched.append(str(root / JAR_GLOB))
        if jars:
            return jars[-1]
    raise EmulatorNotFound(
        f"Pub/Sub emulator jar not found (looked for {', '.join(searched)}). {INSTALL_HINT}"
    )


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise EmulatorNotFound(
            f"'{tool}' is not on PATH: the Pub/Sub emulator needs a Java runtime and compiler "
            "(e.g. the Debian package default-jdk-headless)."
        )
    return path


def compile_stream_close_fix(jar: Path) -> Path:
    """Compile the InternalStatus fix against ``jar``; cached by source and jar."""
    javac = _require("javac")
    digest = hashlib.sha256(FIX_SOURCE.read_bytes() + str(jar.resolve()).encode()).hexdigest()
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "django-i3tasks")
    target = cache / "emulator-fix" / digest[:16]
    if (target / "io" / "grpc" / "InternalStatus.class").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    result = subprocess.run(
        [javac, "-nowarn", "-cp", str(jar), "-d", str(build), str(FIX_SOURCE)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        raise EmulatorError(f"compiling the emulator fix failed:\n{result.stderr}")
    try:
        build.rename(target)  # atomic; a concurrent process may have won the race
    except OSError:
        shutil.rmtree(build, ignore_errors=True)
    return target


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PubSubEmulator:
    """One emulator process: ``PubSubEmulator().start()``, ``.endpoint``, ``.kind``,
    ``.stop()``. ``kind`` (``python``, ``java``, ``auto``; default ``$I3TASKS_EMULATOR`` or
    ``auto``) is resolved by ``start()``; ``push_concurrency`` (Python only) is the number of
    push requests in flight per subscription."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        jar: Path | str | None = None,
        java: str = "java",
        log_path: Path | str | None = None,
        kind: str | None = None,
        push_concurrency: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.jar = Path(jar) if jar else None
        self.java = java
        self.log_path = Path(log_path) if log_path else None
        self.requested = kind
        self.kind: str | None = None
        self.push_concurrency = push_concurrency
        self.process: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._started = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _java_command(self) -> list[str]:
        jar = self.jar or find_emulator_jar()
        java = shutil.which(self.java) or _require("java")
        fix = compile_stream_close_fix(jar)
        if self.port is None:
            self.port = free_port(self.host)
        return [
            java, "-cp", f"{fix}{os.pathsep}{jar}",
            "com.google.cloud.pubsub.testing.v1.Main",
            f"--host={self.host}", f"--port={self.port}",
        ]

    def _python_command(self) -> list[str]:
        command = [sys.executable, "-m", "django_i3tasks.testing.pubsub",
                   "--host", self.host, "--port", str(self.port or 0)]
        if self.push_concurrency:
            command += ["--push-concurrency", str(self.push_concurrency)]
        return command

    def start(self, timeout: float = 30.0) -> PubSubEmulator:
        self.kind = "java" if requested_kind(self.requested) == "java" else choose_kind(
            self.requested, self.jar, self.java)[0]
        command = self._java_command() if self.kind == "java" else self._python_command()
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(
                   filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env=env,
        )
        atexit.register(self.stop)
        threading.Thread(target=self._read_output, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._started.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(
                    "the Pub/Sub emulator did not start:\n" + "".join(self._tail)
                )
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        log = open(self.log_path, "a") if self.log_path else None  # noqa: SIM115
        try:
            for line in self.process.stdout:
                self._tail.append(line)
                if log:
                    log.write(line)
                    log.flush()
                if self.kind == "python" and line.startswith("PUBSUB_EMULATOR_HOST="):
                    self.port = int(line.strip().rsplit(":", 1)[1])
                    self._started.set()
                elif "Server started" in line:
                    self._started.set()
        finally:
            if log:
                log.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def emulated_pubsub(kind: str | None = None, **options: object) -> Iterator[PubSubEmulator]:
    """Run an emulator for the block with ``PUBSUB_EMULATOR_HOST`` pointing at it (restored
    afterwards), so the package and Google's clients use it: for a project's own tests."""
    emulator = PubSubEmulator(kind=kind, **options).start()  # type: ignore[arg-type]
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    try:
        yield emulator
    finally:
        emulator.stop()
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


def _announce(kind: str, endpoint: str, port: int | None) -> None:
    """The line to export first (scripts read it), then which emulator runs and where."""
    print(f"PUBSUB_EMULATOR_HOST={endpoint}")
    chosen = "the port --port gave" if port else "a free port (--port 8085 fixes it)"
    print(f"{kind} Pub/Sub emulator ready on {endpoint}, {chosen}. The environment variable "
          "PUBSUB_EMULATOR_HOST wins over PUBSUB_CONFIG['HOST'].", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Pub/Sub emulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help=f"python, java or auto (default: ${KIND_ENV} or auto)")
    parser.add_argument("--check", action="store_true",
                        help="only say which emulator would run (locating the jar and "
                             "compiling the fix for Java), then exit")
    args = parser.parse_args(argv)
    try:
        kind, why = choose_kind(args.kind)
    except (EmulatorNotFound, EmulatorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"emulator: {kind} ({why})")
        if kind == "java":
            jar = find_emulator_jar()
            print(f"emulator jar: {jar}\nstream-close fix: {compile_stream_close_fix(jar)}")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if kind == "python":
        from .pubsub import EmulatorServer

        try:
            server = EmulatorServer(args.host, args.port or 0).start()
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _announce("python", server.endpoint, args.port)
        stop.wait()
        server.stop()
        return 0
    emulator = PubSubEmulator(host=args.host, port=args.port, kind="java").start()
    _announce("java", emulator.endpoint, args.port)
    while not stop.wait(0.5):
        if emulator.process is None or emulator.process.poll() is not None:
            print("the emulator exited", file=sys.stderr)
            return 1
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
