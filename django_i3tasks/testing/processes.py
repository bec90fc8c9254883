"""A subprocess whose output is read line by line while it runs (worker tests, benchmarks)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


class OutputProcess:
    """``Popen`` with stdout and stderr merged and collected into ``lines`` by a thread, so
    the caller can wait for a line (readiness) without blocking on a full pipe."""

    def __init__(self, command: list[str], env: Mapping[str, str], cwd: Path | str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float, *, anywhere: bool = False) -> str:
        """The first line starting with ``prefix`` (containing it, with ``anywhere``);
        RuntimeError (with the output) when the process exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.lines
                          if (prefix in line if anywhere else line.startswith(prefix))), None)
            if found is not None:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {prefix!r} line from {self.process.args!r}:\n"
                                   f"{self.output}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when it still runs after ``timeout`` (it is then killed)."""
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self._reader.join(timeout=5)
        return code

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM; the exit code (None: killed after ``timeout``) and the seconds it took."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - began

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float,
               watched: Iterable[OutputProcess]) -> bool:
    """Poll ``predicate`` until it holds, ``timeout`` passes or a watched process exits (no
    point waiting for work it was to do); its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if any(process.process.poll() is not None for process in watched):
            break
        time.sleep(interval)
    return predicate()
