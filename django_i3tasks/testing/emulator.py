"""Run Google's official Pub/Sub emulator for tests, the demo and local development.

The emulator jar comes with the gcloud SDK (``gcloud components install pubsub-emulator``, or
the Debian package ``google-cloud-cli-pubsub-emulator`` from Google's apt repository). It is
started directly with ``java`` (the ``gcloud`` wrapper would leave the Java process behind when
killed), with a small class of ours first on the classpath that fixes the jar's stream-close
bug (see ``java/io/grpc/InternalStatus.java``).

``python -m django_i3tasks.testing.emulator [--port N] [--check]`` runs it in the foreground.
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
from pathlib import Path

JAR_ENV = "I3TASKS_PUBSUB_EMULATOR_JAR"
SDK_ROOT_ENV = "I3TASKS_GCLOUD_SDK_ROOT"
CACHE_ENV = "I3TASKS_CACHE_DIR"
JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
FIX_SOURCE = Path(__file__).with_name("java") / "io" / "grpc" / "InternalStatus.java"
INSTALL_HINT = (
    "Install it with 'gcloud components install pubsub-emulator' or the Debian package "
    "'google-cloud-cli-pubsub-emulator' from Google's apt repository, or point "
    f"{JAR_ENV} at the jar."
)


class EmulatorNotFound(RuntimeError):
    """The emulator jar, java or javac is missing."""


class EmulatorError(RuntimeError):
    """The emulator did not start."""


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
    """One emulator process: ``PubSubEmulator().start()``, ``.endpoint``, ``.stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        jar: Path | str | None = None,
        java: str = "java",
        log_path: Path | str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.jar = Path(jar) if jar else None
        self.java = java
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._started = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> PubSubEmulator:
        jar = self.jar or find_emulator_jar()
        java = shutil.which(self.java) or _require("java")
        fix = compile_stream_close_fix(jar)
        if self.port is None:
            self.port = free_port(self.host)
        command = [
            java, "-cp", f"{fix}{os.pathsep}{jar}",
            "com.google.cloud.pubsub.testing.v1.Main",
            f"--host={self.host}", f"--port={self.port}",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
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
                if "Server started" in line:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Pub/Sub emulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--check", action="store_true",
                        help="only locate the jar and compile the fix, then exit")
    args = parser.parse_args(argv)
    try:
        jar = find_emulator_jar()
        _require("java")
        fix = compile_stream_close_fix(jar)
    except (EmulatorNotFound, EmulatorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"emulator jar: {jar}\nstream-close fix: {fix}")
        return 0
    emulator = PubSubEmulator(host=args.host, port=args.port, jar=jar).start()
    print(f"PUBSUB_EMULATOR_HOST={emulator.endpoint}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        if emulator.process is None or emulator.process.poll() is not None:
            print("the emulator exited", file=sys.stderr)
            return 1
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
