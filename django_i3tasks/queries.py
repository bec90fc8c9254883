"""Every hand-written SQL statement of the package, by name.

The ORM writes most statements. These few are written by hand because they are the hot path
(one round trip where the ORM would take several, or a ``Q`` tree compiled on every
delivery) or because the ORM cannot say them (data-modifying CTEs, ``ON CONFLICT``). Each is
built once per database connection alias and model (table and column names quoted for that
vendor) and cached; callers pass the parameters in the order the docstring gives.

The statements of the state machine come first, then those of the beat, the clean-up and the
dashboard. Vendors: ``claim_try`` runs everywhere; ``succeed_try``, ``insert_linked`` and
``insert_many_linked`` are PostgreSQL only (callers fall back to the ORM elsewhere);
``insert_new`` is PostgreSQL's and SQLite's ``INSERT ... ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .models import (
    ScheduleState,
    TaskExecution,
    TaskExecutionResult,
    TaskExecutionTry,
    TaskGroup,
)

_cache: dict[tuple[Any, ...], Any] = {}


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    known = _cache.get(key)
    if known is None:
        known = _cache[key] = build()
    return known


def _columns(model: Any, connection: Any, *names: str) -> dict[str, str]:
    quote = connection.ops.quote_name
    return {name: quote(model._meta.get_field(name).column) for name in names}


def claim_try(connection: Any) -> str:
    """Claim a due, queued try, or a running one whose lease expired, under a new token.

    Parameters: running status, started at, lease expires at, token, try id, execution id,
    try number, queued status, now, running status, now. The row count says whether the
    claim was won; where the database can (``RETURNING``), the row also gives the try's
    ``not_before`` (when it was due: the queue delay of metrics).
    """
    return str(_cached(("claim_try", connection.alias),
                       lambda: _claim_update(connection) + _claim_returning(connection)))


def _claim_update(connection: Any) -> str:
    column = _columns(TaskExecutionTry, connection, "status", "started_at",
                      "lease_expires_at", "claim_token", "claims", "id", "execution",
                      "number", "not_before")
    table = connection.ops.quote_name(TaskExecutionTry._meta.db_table)
    return (
        f"UPDATE {table} SET {column['status']} = %s, "
        f"{column['started_at']} = %s, {column['lease_expires_at']} = %s, "
        f"{column['claim_token']} = %s, {column['claims']} = {column['claims']} + 1 "
        f"WHERE {column['id']} = %s AND {column['execution']} = %s "
        f"AND {column['number']} = %s AND (({column['status']} = %s "
        f"AND {column['not_before']} <= %s) OR ({column['status']} = %s "
        f"AND {column['lease_expires_at']} < %s))"
    )


def _claim_returning(connection: Any) -> str:
    """``RETURNING not_before`` where the database has it (PostgreSQL, SQLite 3.35+)."""
    if not connection.features.can_return_columns_from_insert:
        return ""
    return " RETURNING " + _columns(TaskExecutionTry, connection, "not_before")["not_before"]


def claim_limited(connection: Any, *, concurrency: bool, rate: bool) -> str:
    """``claim_try`` admitted by the task's limits, in the same statement: fewer than the
    limit of its tries (of its ``concurrency_key``) running under an unexpired lease, and
    fewer than the rate's starts since the period began. One statement, so it is atomic on
    SQLite; on PostgreSQL the caller holds the key's advisory lock (``admission``).

    Parameters: those of ``claim_try``; then with ``concurrency``: task name, key, running
    status, now, limit; then with ``rate``: task name, key, period start, starts allowed.
    """
    def build() -> str:
        quote = connection.ops.quote_name
        tries = quote(TaskExecutionTry._meta.db_table)
        executions = quote(TaskExecution._meta.db_table)
        column = _columns(TaskExecutionTry, connection, "status", "lease_expires_at",
                          "started_at", "execution")
        ex = _columns(TaskExecution, connection, "id", "task_name", "concurrency_key")

        def count(condition: str) -> str:
            return (f" AND (SELECT COUNT(*) FROM {tries} lt JOIN {executions} le "
                    f"ON lt.{column['execution']} = le.{ex['id']} "
                    f"WHERE le.{ex['task_name']} = %s AND le.{ex['concurrency_key']} = %s "
                    f"AND {condition}) < %s")

        sql = _claim_update(connection)
        if concurrency:
            sql += count(f"lt.{column['status']} = %s AND lt.{column['lease_expires_at']} >= %s")
        if rate:
            sql += count(f"lt.{column['started_at']} > %s")
        return sql + _claim_returning(connection)

    return str(_cached(("claim_limited", connection.alias, concurrency, rate), build))


def succeed_try(connection: Any, *, progress_cast: str | None, value_column: str,
                value_cast: str, unless_next: bool) -> str:
    """PostgreSQL: finish a try (guarded by its claim token), insert its result and finish
    its pending execution in one statement (data-modifying CTEs). Rows are locked in the
    order the other databases' three statements use (try, then execution).

    Parameters: [execution id when ``unless_next``], success status, finished at,
    [progress when ``progress_cast``], try id, token, running status, execution id, value,
    is_repr, created at, success status, finished at, execution id, pending status.

    Returns one row ``(finished, updated, has_next)``. With ``unless_next`` the statement
    first locks the execution row (``FOR NO KEY UPDATE``, the order ``cancel`` and
    ``record_failure`` use) and changes nothing when ``has_next`` is set.
    """
    def build() -> str:
        quote = connection.ops.quote_name
        tries = quote(TaskExecutionTry._meta.db_table)
        results = quote(TaskExecutionResult._meta.db_table)
        executions = quote(TaskExecution._meta.db_table)
        lock_sql = guard_sql = ""
        if unless_next:
            lock_sql = (f"x AS (SELECT has_next FROM {executions} WHERE id = %s "
                        "FOR NO KEY UPDATE), ")
            guard_sql = " AND NOT COALESCE((SELECT has_next FROM x), false)"
        progress_sql = f", progress = {progress_cast}" if progress_cast else ""
        return (
            f"WITH {lock_sql}t AS (UPDATE {tries} SET status = %s, "
            f"finished_at = %s, lease_expires_at = NULL{progress_sql} "
            f"WHERE id = %s AND claim_token = %s AND status = %s{guard_sql} RETURNING id), "
            f"r AS (INSERT INTO {results} "
            f"(execution_id, task_try_id, {value_column}, is_repr, created_at) "
            f"SELECT %s, t.id, {value_cast}, CAST(%s AS boolean), CAST(%s AS timestamptz) "
            "FROM t RETURNING id), "
            f"e AS (UPDATE {executions} SET status = %s, finished_at = %s "
            "WHERE id = %s AND status = %s AND EXISTS (SELECT 1 FROM t) RETURNING has_next) "
            "SELECT EXISTS (SELECT 1 FROM t), EXISTS (SELECT 1 FROM e), "
            + ("COALESCE((SELECT has_next FROM x), false)" if unless_next
               else "(SELECT has_next FROM e)")
        )

    key = ("succeed_try", connection.alias, progress_cast, value_column, value_cast, unless_next)
    return str(_cached(key, build))


def insert_linked(parent_model: Any, child_model: Any, link: str, connection: Any,
                  p_fields: list[Any], c_fields: list[Any]) -> str:
    """PostgreSQL: a parent row and a child row pointing to it, in one statement.

    ``WITH p AS (INSERT ... RETURNING id) INSERT INTO child VALUES ((SELECT id FROM p), ...)``.
    Parameters: the values of ``p_fields``, then of ``c_fields``. Returns
    ``(parent pk, child pk)``.
    """
    def build() -> str:
        quote = connection.ops.quote_name
        p_meta, c_meta = parent_model._meta, child_model._meta
        fk = c_meta.get_field(link)
        return (
            f"WITH p AS (INSERT INTO {quote(p_meta.db_table)} "
            f"({', '.join(quote(f.column) for f in p_fields)}) "
            f"VALUES ({', '.join(['%s'] * len(p_fields))}) RETURNING {quote(p_meta.pk.column)}) "
            f"INSERT INTO {quote(c_meta.db_table)} "
            f"({quote(fk.column)}, {', '.join(quote(f.column) for f in c_fields)}) "
            f"VALUES ((SELECT {quote(p_meta.pk.column)} FROM p), "
            f"{', '.join(['%s'] * len(c_fields))}) "
            f"RETURNING {quote(fk.column)}, {quote(c_meta.pk.column)}"
        )

    key = ("insert_linked", parent_model, child_model, link, connection.vendor)
    return str(_cached(key, build))


def insert_many_linked(parent_model: Any, child_model: Any, link: str, key: str,
                       connection: Any, varying: list[Any], picks: list[str],
                       p_cols: list[str], p_exprs: list[str], c_cols: list[str],
                       c_exprs: list[str], copied: Sequence[str] = ()) -> str:
    """PostgreSQL: one parent per element of a JSON document and a child linked to each.

    Parameters: the parents' constant values, the JSON document (``db.json_rows``), the
    children's constant values. The child's ``copied`` fields take the parent's value.
    Returns ``(key, parent pk, child pk)`` rows.
    """
    quote = connection.ops.quote_name
    p_meta, c_meta = parent_model._meta, child_model._meta
    fk = c_meta.get_field(link)
    p_pk, c_pk = quote(p_meta.pk.column), quote(c_meta.pk.column)
    p_copied = [quote(p_meta.get_field(name).column) for name in copied]
    c_copied = [quote(c_meta.get_field(name).column) for name in copied]
    returned = ", ".join([p_pk, quote(p_meta.get_field(key).column), *p_copied])
    return (
        f"WITH p AS (INSERT INTO {quote(p_meta.db_table)} "
        f"({', '.join([quote(f.column) for f in varying] + p_cols)}) "
        f"SELECT {', '.join(picks + p_exprs)} FROM json_array_elements(%s::json) AS r(value) "
        f"RETURNING {returned}), "
        f"c AS (INSERT INTO {quote(c_meta.db_table)} "
        f"({', '.join([quote(fk.column), *c_copied, *c_cols])}) "
        f"SELECT {', '.join([f'p.{p_pk}', *[f'p.{c}' for c in p_copied], *c_exprs])} FROM p "
        f"RETURNING {quote(fk.column)}, {c_pk}) "
        f"SELECT p.{quote(p_meta.get_field(key).column)}, p.{p_pk}, c.{c_pk} "
        f"FROM p JOIN c ON c.{quote(fk.column)} = p.{p_pk}"
    )


def insert_new(model: Any, connection: Any, fields: list[Any], unique: list[str],
               returning: list[str] | None, *, picks: list[str] | None = None,
               rows: int = 0) -> str:
    """Insert rows that do not exist yet: ``INSERT ... ON CONFLICT (unique) DO NOTHING``
    [``RETURNING``]. On PostgreSQL the rows come as one JSON parameter read with ``picks``
    (``db.json_rows``); on SQLite as ``rows`` ``VALUES`` lists of one parameter per field."""
    quote = connection.ops.quote_name
    head = (
        f"INSERT INTO {quote(model._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in fields)}) "
    )
    tail = (
        f" ON CONFLICT ({', '.join(quote(model._meta.get_field(n).column) for n in unique)})"
        " DO NOTHING"
    )
    if returning is not None:
        tail += " RETURNING " + ", ".join(
            quote(model._meta.get_field(n).column) for n in returning)
    if picks is not None:
        return (head + f"SELECT {', '.join(picks)} "
                "FROM json_array_elements(%s::json) AS r(value)" + tail)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return f"{head}VALUES {', '.join([placeholders] * rows)}{tail}"


def lock_concurrency_key(connection: Any, lock_space: int) -> str:
    """An execution's ``concurrency_key``; on PostgreSQL also the advisory lock of its task
    and key and the execution's row lock, until the transaction ends (``admission``).
    Parameter: execution id."""
    def build() -> str:
        table = connection.ops.quote_name(TaskExecution._meta.db_table)
        if connection.vendor == "postgresql":
            return (f"SELECT concurrency_key, pg_advisory_xact_lock({lock_space}, "
                    f"hashtext(task_name || '|' || concurrency_key)) FROM {table} "
                    "WHERE id = %s FOR NO KEY UPDATE")
        return f"SELECT concurrency_key FROM {table} WHERE id = %s"

    return str(_cached(("lock_concurrency_key", connection.alias, lock_space), build))


def advance_schedule_states(connection: Any, *, picks: list[str] | None = None,
                            rows: int = 0) -> str:
    """The beat: move each schedule's ``next_fire`` (and ``last_slot``, ``spec`` when given)
    forward, never back, for many schedules in one statement. On PostgreSQL the rows come as
    one JSON parameter read with ``picks``; on SQLite as ``rows`` ``VALUES`` lists of
    (id, next_fire, last_slot, spec)."""
    table = connection.ops.quote_name(ScheduleState._meta.db_table)
    head = (f"UPDATE {table} SET next_fire = v.column2, "
            f"last_slot = COALESCE(v.column3, {table}.last_slot), "
            f"spec = COALESCE(v.column4, {table}.spec) FROM ")
    tail = (f" WHERE {table}.id = v.column1 "
            f"AND ({table}.next_fire < v.column2 OR v.column4 IS NOT NULL)")
    if picks is not None:
        return (head + f"(SELECT {', '.join(picks)} FROM json_array_elements(%s::json) "
                "AS r(value)) AS v(column1, column2, column3, column4)" + tail)
    placeholders = ", ".join(["(%s, %s, %s, %s)"] * rows)
    return head + f"(VALUES {placeholders}) AS v" + tail


def delete_executions(connection: Any, ids: list[int]) -> list[tuple[str, Any]]:
    """``i3tasks_clean``'s batch: the executions ``ids`` with their results and tries, once
    what still points at them is unlinked (a next step's ``previous``, a failure handler's
    ``handler_of``, a group's ``callback`` and ``failure_handler``), as ``(statement,
    parameters)`` pairs for one transaction. PostgreSQL: ONE statement whose data-modifying
    CTEs share the ids as one array parameter (``ids``); elsewhere one statement per table."""
    quote = connection.ops.quote_name
    execution, group = TaskExecution._meta, TaskGroup._meta
    results, tries = TaskExecutionResult._meta.db_table, TaskExecutionTry._meta.db_table
    table, groups = quote(execution.db_table), quote(group.db_table)
    previous, handler_of = quote("previous_id"), quote("handler_of_id")
    callback, failure_handler = quote("callback_id"), quote("failure_handler_id")
    if connection.vendor == "postgresql":
        def build() -> str:
            within = "= ANY(%(ids)s)"  # an index scan per table, the array given once

            def unlink(column: str) -> str:
                return f"{column} = CASE WHEN {column} {within} THEN NULL ELSE {column} END"

            return (
                f"WITH r AS (DELETE FROM {quote(results)} WHERE {quote('execution_id')} "
                f"{within}), "
                f"t AS (DELETE FROM {quote(tries)} WHERE {quote('execution_id')} {within}), "
                f"s AS (UPDATE {table} SET {unlink(previous)}, {unlink(handler_of)} "
                f"WHERE ({previous} {within} OR {handler_of} {within}) "
                f"AND NOT {quote('id')} {within}), "
                f"g AS (UPDATE {groups} SET {unlink(callback)}, {unlink(failure_handler)} "
                f"WHERE {callback} {within} OR {failure_handler} {within}) "
                f"DELETE FROM {table} WHERE {quote('id')} {within}"
            )

        return [(str(_cached(("delete_executions", connection.alias), build)),
                 {"ids": list(ids)})]
    marks = ", ".join(["%s"] * len(ids))
    statements = [
        f"DELETE FROM {quote(results)} WHERE {quote('execution_id')} IN ({marks})",
        f"DELETE FROM {quote(tries)} WHERE {quote('execution_id')} IN ({marks})",
        f"UPDATE {table} SET {previous} = NULL WHERE {previous} IN ({marks})",
        f"UPDATE {table} SET {handler_of} = NULL WHERE {handler_of} IN ({marks})",
        f"UPDATE {groups} SET {callback} = NULL WHERE {callback} IN ({marks})",
        f"UPDATE {groups} SET {failure_handler} = NULL WHERE {failure_handler} IN ({marks})",
        f"DELETE FROM {table} WHERE {quote('id')} IN ({marks})",
    ]
    return [(sql, list(ids)) for sql in statements]


def try_task(connection: Any) -> str:
    """The task name of try ``t``: its own copy, or for a try written before tries carried
    one (migration 0013), its execution's, looked up for that row only. PostgreSQL runs the
    lookup only for such rows, but estimates it for every row: the statements using this turn
    JIT off (``stats._window_statement``), or compiling costs more than the statement. As
    ``text``: typed ``varchar(255)``, each group was estimated 500 bytes wide, over the hash's
    memory, and the dashboard's pass sorted instead (1.6x slower)."""
    executions = connection.ops.quote_name(TaskExecution._meta.db_table)
    return ("CASE WHEN t.task_name <> '' THEN t.task_name::text ELSE "
            f"(SELECT e.task_name::text FROM {executions} e WHERE e.id = t.execution_id) END")


def try_timings(connection: Any) -> str:
    """PostgreSQL: per task, the tries finished since a moment (parameter): count and the
    p50/p95 of run time and of queue delay (started - due), in seconds."""
    def build() -> str:
        tries = connection.ops.quote_name(TaskExecutionTry._meta.db_table)
        return (
            f"SELECT {try_task(connection)}, count(*), "
            "percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM t.finished_at - t.started_at)), "
            "percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP "
            "(ORDER BY greatest(extract(epoch FROM t.started_at - t.not_before), 0)) "
            f"FROM {tries} t "
            "WHERE t.finished_at >= %s AND t.started_at IS NOT NULL GROUP BY 1"
        )

    return str(_cached(("try_timings", connection.alias), build))


#: The dashboard's run-time and queue-delay histograms: bins per factor e of seconds above
#: 1 ms (a bin spans 5 %; a negative bin holds everything under 1 ms).
LOG_BINS = 20


def window_tries(connection: Any) -> str:
    """PostgreSQL, the dashboard's one pass over a window of finished tries: one range of the
    tries table (their own task names, ``try_task``), grouped three ways at once
    (``GROUPING SETS``, hashed) with no sort, and only float arithmetic per row, so 100,000
    tries cost an index range and a hash aggregate. Parameters: the time bucket's length in
    seconds, the window's start. Rows ``(set, status, bucket, task, run bin, delay bin, n)``,
    the bucket in seconds since the epoch divided by its length; ``set`` is ``GROUPING()`` of
    the five keys: 3 tries per task, outcome and time bucket, 25 per task and run-time bin, 26
    per task and queue-delay bin (``LOG_BINS``; a NULL bin is a try without a start time)."""
    def build() -> str:
        tries = connection.ops.quote_name(TaskExecutionTry._meta.db_table)

        def log_bin(seconds: str) -> str:  # under 1 ms: ln(0.5) * LOG_BINS, negative
            return f"floor(ln(greatest({seconds}, 0.0005) / 0.001) * {LOG_BINS})::int"

        # date_part() is float8; extract() would compute in numeric.
        run = "date_part('epoch', t.finished_at - t.started_at)"
        delay = "date_part('epoch', t.started_at - t.not_before)"
        return (
            "SELECT GROUPING(w.status, w.b, w.task, w.hd, w.hq), w.status, w.b, w.task, "
            f"w.hd, w.hq, count(*) FROM (SELECT {try_task(connection)} AS task, "
            "t.status AS status, "
            "floor(date_part('epoch', t.finished_at) / %s)::bigint AS b, "
            f"{log_bin(run)} AS hd, {log_bin(delay)} AS hq "
            f"FROM {tries} t WHERE t.finished_at >= %s) AS w "
            "GROUP BY GROUPING SETS ((w.task, w.status, w.b), (w.task, w.hd), (w.task, w.hq))"
        )

    return str(_cached(("window_tries", connection.alias), build))
