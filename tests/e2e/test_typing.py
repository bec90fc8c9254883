"""The public API is typed: mypy (with the project's configuration) checks task calls."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = '''
    from django_i3tasks import TaskDecorator, TaskGroup

    @TaskDecorator
    def add(a: int, b: int) -> int:
        return a + b

    @TaskDecorator(max_retries=2, queue_name="heavy")
    async def fetch(url: str) -> bytes:
        return b""

    @TaskDecorator
    def square(x: int) -> int:
        return x * x

    reveal_type(add.sync_run(1, 2))
    reveal_type(fetch.sync_run("https://example.com"))
    reveal_type(add.delay(1, 2))
    reveal_type(add.delay(1, 2).then(fetch, "u"))
    reveal_type(square.map([1, 2]))
    add.delay("one", 2)  # line 21: wrong argument type
    add.delay(1)  # line 22: missing argument
    add.delay(1, 2).then(fetch, 3)  # line 23: wrong argument type for the next step
    fetch(url=1)  # line 24: wrong keyword argument type
    add.sync_run(1, 2).upper()  # line 25: an int has no upper()
'''


def mypy(tmp_path, source: str) -> tuple[list[str], list[int], str]:
    """Run mypy (the project's configuration) on ``source``: the revealed types, the lines
    with an error, and mypy's output."""
    # A module name of its own: mypy's cache is shared with the test command's mypy run.
    sample = tmp_path / f"typing_sample_{uuid.uuid4().hex}.py"
    sample.write_text(textwrap.dedent(source))
    out, err, _ = mypy_api.run([
        "--config-file", str(ROOT / "pyproject.toml"), "--no-error-summary",
        "--cache-dir", str(ROOT / ".mypy_cache"), str(sample),
    ])
    lines = [line.split(f"{sample.name}:", 1)[1] for line in out.splitlines()
             if f"{sample.name}:" in line]
    revealed = [line.split('"')[1].replace("builtins.", "") for line in lines
                if "Revealed type" in line]
    errors = sorted({int(line.split(":")[0]) for line in lines if ": error:" in line})
    return revealed, errors, out + err


def test_mypy_checks_task_arguments_and_results(tmp_path):
    revealed, errors, out = mypy(tmp_path, SAMPLE)
    assert revealed == [
        "int",
        "bytes",
        "django_i3tasks.handles.TaskHandle[int]",
        "django_i3tasks.handles.TaskHandle[bytes]",
        "list[django_i3tasks.handles.TaskHandle[int]]",
    ], out
    assert errors == [21, 22, 23, 24, 25], out


PIPE_SAMPLE = '''
    from typing import Any

    from django_i3tasks import TaskDecorator

    @TaskDecorator
    def fetch(url: str) -> bytes:
        return b""

    @TaskDecorator
    def parse(page: bytes, strict: bool = False) -> dict[str, int]:
        return {}

    @TaskDecorator
    def store(doc: dict[str, int], bucket: str) -> str:
        return bucket

    @TaskDecorator
    def alert(failure: dict[str, Any], channel: str) -> None:
        pass

    reveal_type(fetch.delay("u").pipe(parse).pipe(store, "b"))
    reveal_type(fetch.build_chain("u").pipe(parse, strict=True))
    reveal_type(fetch.delay("u").on_failure(alert, "ops"))
    fetch.delay("u").pipe(store, "b")  # line 25: bytes is not dict[str, int]
    fetch.delay("u").pipe(parse, "no")  # line 26: strict is a bool
    fetch.delay("u").pipe(parse).pipe(store)  # line 27: bucket missing
    fetch.delay("u").on_failure(alert, 1)  # line 28: channel is a str
'''


def test_mypy_checks_that_pipe_hands_the_right_type_on(tmp_path):
    """``pipe`` is typed with ``Concatenate``: the next task's first parameter must accept
    the value, the rest are checked as with ``.then()``."""
    revealed, errors, out = mypy(tmp_path, PIPE_SAMPLE)
    assert revealed == [
        "django_i3tasks.handles.TaskHandle[str]",
        "django_i3tasks.handles.TaskHandle[dict[str, int]]",
        "django_i3tasks.handles.TaskHandle[bytes]",
    ], out
    assert errors == [25, 26, 27, 28], out
