"""``manage.py i3tasks list|show|retry|cancel|stats``: the operator's command.

Exit codes: 0 done, 1 nothing matched or a uuid is unknown, 2 a usage error. Tables by
default, JSON with ``--json``. The work is done by ``django_i3tasks.operations``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_i3tasks import operations

NOTHING_MATCHED = 1
USAGE = 2


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _ms(value: Any) -> str | None:
    return None if value is None else f"{value * 1000:.1f} ms"


class Command(BaseCommand):
    help = "Inspect and act on task executions: list, show, retry, cancel, stats."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        listing = sub.add_parser("list", help="the newest executions")
        listing.add_argument("--status")
        listing.add_argument("--task")
        listing.add_argument("--queue")
        listing.add_argument("--since", help="e.g. 30m, 1h, 2d")
        listing.add_argument("--limit", type=int, default=50)
        listing.add_argument("--json", action="store_true")
        show = sub.add_parser("show", help="one execution: tries, errors, result, chain, group")
        show.add_argument("uuid")
        show.add_argument("--json", action="store_true")
        retry = sub.add_parser("retry", help="run failed executions again")
        retry.add_argument("uuids", nargs="*")
        retry.add_argument("--failed", action="store_true", help="every failed execution")
        retry.add_argument("--task")
        retry.add_argument("--since")
        retry.add_argument("--json", action="store_true")
        cancel = sub.add_parser("cancel", help="cancel executions")
        cancel.add_argument("uuids", nargs="+")
        cancel.add_argument("--json", action="store_true")
        stats = sub.add_parser("stats", help="per task: counts, failure rate, p50/p95")
        stats.add_argument("--since", default="1h")
        stats.add_argument("--json", action="store_true")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        try:
            getattr(self, f"do_{subcommand}")(options)
        except operations.OperationsUsageError as exc:
            raise CommandError(str(exc), returncode=USAGE) from None

    def _out(self, options: dict[str, Any], data: Any, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str) if options["json"] else text)

    @staticmethod
    def _since(options: dict[str, Any]) -> Any:
        return operations.parse_since(options["since"]) if options.get("since") else None

    def do_list(self, options: dict[str, Any]) -> None:
        rows = operations.list_executions(
            status=options["status"], task=options["task"], queue=options["queue"],
            since=self._since(options), limit=options["limit"])
        self._out(options, rows, _table(rows, ["uuid", "task", "status", "queue", "tries",
                                               "created_at", "duration"]))
        if not rows:
            raise CommandError("no execution matched", returncode=NOTHING_MATCHED)

    def do_show(self, options: dict[str, Any]) -> None:
        [execution_uuid] = operations.parse_uuids([options["uuid"]])
        data = operations.show(execution_uuid)
        if data is None:
            raise CommandError(f"no execution {execution_uuid}", returncode=NOTHING_MATCHED)
        head = "\n".join(f"{k}: {data[k]}" for k in (
            "uuid", "task", "status", "queue", "args", "kwargs", "created_at", "finished_at"))
        tries = _table(data["tries"], ["number", "status", "started_at", "duration",
                                       "queue_delay", "error_type", "error_message"])
        result = "-" if data["result"] is None else json.dumps(data["result"]["value"])
        chain, group = data["chain"], data["group"]
        text = (f"{head}\nresult: {result}\nchain: previous {chain['previous'] or '-'}, "
                f"next {', '.join(chain['next']) or '-'}\n"
                f"group: {'-' if group is None else json.dumps(group)}\n\ntries:\n{tries}")
        for attempt in data["tries"]:
            if attempt["traceback"]:
                text += f"\n\ntraceback of try {attempt['number']}:\n{attempt['traceback']}"
        self._out(options, data, text)

    def do_retry(self, options: dict[str, Any]) -> None:
        if options["failed"] == bool(options["uuids"]):
            raise CommandError("give execution uuids or --failed (not both)", returncode=USAGE)
        if (options["task"] or options["since"]) and not options["failed"]:
            raise CommandError("--task and --since go with --failed", returncode=USAGE)
        if options["failed"]:
            data = operations.retry_failed(task=options["task"], since=self._since(options))
        else:
            data = operations.retry(operations.parse_uuids(options["uuids"]))
        self._changed(options, data, "retried", "not_failed", "not failed")

    def do_cancel(self, options: dict[str, Any]) -> None:
        data = operations.cancel(operations.parse_uuids(options["uuids"]))
        self._changed(options, data, "cancelled", "finished", "already finished")

    def _changed(
        self, options: dict[str, Any], data: dict[str, Any], done: str, kept: str, why: str
    ) -> None:
        """Report what ``retry``/``cancel`` changed (``data[done]``), left alone
        (``data[kept]``, because ``why``) and did not know; fail when it changed nothing, so a
        script sees it."""
        lines = [f"{done} {len(data[done])}"] + [f"  {u}" for u in data[done]]
        lines += [f"{why}, left alone: {u}" for u in data[kept]]
        lines += [f"unknown: {u}" for u in data["unknown"]]
        self._out(options, data, "\n".join(lines))
        if data["unknown"] or not data[done]:
            raise CommandError("unknown uuid(s)" if data["unknown"] else f"nothing {done}",
                               returncode=NOTHING_MATCHED)

    def do_stats(self, options: dict[str, Any]) -> None:
        rows = operations.task_stats(operations.parse_since(options["since"]))
        table = [{
            **{s: r["counts"].get(s, 0) for s in ("success", "failed", "pending")},
            "task": r["task"], "total": r["total"],
            "failure": None if r["failure_rate"] is None else f"{r['failure_rate']:.1%}",
            "p50 run": _ms(r["p50_duration"]), "p95 run": _ms(r["p95_duration"]),
            "p50 delay": _ms(r["p50_delay"]), "p95 delay": _ms(r["p95_delay"]),
        } for r in rows]
        self._out(options, rows, _table(table, [
            "task", "total", "success", "failed", "pending", "failure", "p50 run", "p95 run",
            "p50 delay", "p95 delay"]))
        if not rows:
            raise CommandError("no execution in the window", returncode=NOTHING_MATCHED)
