"""Database helpers shared by the execution path."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any, cast

from django.db import IntegrityError, connections, router, transaction
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import queries


def unique_row(queryset: QuerySet[Any]) -> Any:
    """The row a lookup by a unique key finds, or None. Unlike ``.first()`` it adds no
    ``ORDER BY id``. With that order on a query that joins (``select_related``), PostgreSQL
    costs merge joins, and planning them reads the ends of the id indexes. After a large
    clean-up those ends hold dead entries until VACUUM, and planning took 6 ms for a 0.1 ms
    lookup (``bench/scale.py``, status endpoint)."""
    return next(iter(queryset[:1]), None)


def update_returning(queryset: QuerySet, returning: list[str], **values: Any) -> list[tuple]:
    """``queryset.update(**values)`` returning ``returning`` columns of the updated rows.

    One ``UPDATE ... RETURNING`` statement on PostgreSQL and SQLite: the row lock and the read
    happen together, so what is returned is the row as this update left it, also when the
    update had to wait for a concurrent transaction. Other databases lock, update and read.
    """
    using = queryset.db
    connection = connections[using]
    model = queryset.model
    convert = _converters(model, returning, connection)
    if connection.vendor in ("postgresql", "sqlite"):
        query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
        query.add_update_values(values)
        sql, params = query.get_compiler(using).as_sql()
        if not sql:
            return []
        columns = ", ".join(
            connection.ops.quote_name(model._meta.get_field(name).column) for name in returning
        )
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} RETURNING {columns}", params)
            return [convert(row) for row in cursor.fetchall()]
    with transaction.atomic(using=using, savepoint=False):
        pks = list(queryset.select_for_update().values_list("pk", flat=True))
        if not pks:
            return []
        model._default_manager.using(using).filter(pk__in=pks).update(**values)
        return list(
            model._default_manager.using(using).filter(pk__in=pks).values_list(*returning)
        )


def _converters(model: Any, names: list[str], connection: Any) -> Any:
    """A function turning a raw row into Python values, as the ORM would (JSON, UUID, bool)."""
    steps = []
    for name in names:
        field = model._meta.get_field(name)
        column = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        steps.append((column, functions))

    def convert(row: Any) -> tuple:
        values = []
        for value, (column, functions) in zip(row, steps, strict=True):
            for function in functions:
                value = function(value, column, connection)
            values.append(value)
        return tuple(values)

    return convert


def insert_new(
    model: Any, rows: list[dict[str, Any]], unique: list[str], returning: list[str]
) -> list[tuple]:
    """Insert the rows that do not exist yet; return ``returning`` of those this call wrote.

    ``INSERT ... ON CONFLICT (unique) DO NOTHING RETURNING``: when two transactions insert the
    same row at once, the second waits for the first and then skips it, so exactly one caller
    learns that it wrote the row. On PostgreSQL the rows are one JSON parameter
    (``json_rows``), on SQLite ``VALUES`` lists of ``_INSERT_CHUNK`` rows. Other databases
    insert row by row in savepoints.
    """
    return cast(list[tuple], _insert_new(model, rows, unique, returning))


def count_new(model: Any, rows: list[dict[str, Any]], unique: list[str]) -> int:
    """``insert_new`` when only the number of rows this call wrote matters: nothing comes
    back (10,000 returned keys cost the beat more to read than the insert took)."""
    return cast(int, _insert_new(model, rows, unique, None))


def _insert_new(
    model: Any, rows: list[dict[str, Any]], unique: list[str], returning: list[str] | None
) -> list[tuple] | int:
    if not rows:
        return [] if returning is not None else 0
    connection = connections[router.db_for_write(model)]
    fields = [model._meta.get_field(name) for name in rows[0]]
    if connection.vendor not in ("postgresql", "sqlite"):
        written = []
        for row in rows:
            try:
                with transaction.atomic(using=connection.alias):
                    obj = model._default_manager.using(connection.alias).create(**row)
            except IntegrityError:
                continue
            written.append(tuple(getattr(obj, model._meta.get_field(n).attname)
                                 for n in returning or ()))
        return written if returning is not None else len(written)
    convert = None if returning is None else _converters(model, returning, connection)
    if connection.vendor == "postgresql":
        document, picks = json_rows(
            fields, [[row[field.name] for field in fields] for row in rows], connection
        )
        sql = queries.insert_new(model, connection, fields, unique, returning, picks=picks)
        with connection.cursor() as cursor:
            without_jit(cursor, connection, len(rows))
            cursor.execute(sql, [document])
            if convert is None:
                return cursor.rowcount
            return [convert(row) for row in cursor.fetchall()]
    written, count = [], 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start:start + _INSERT_CHUNK]
            params = [
                field.get_db_prep_save(row[field.name], connection)
                for row in chunk
                for field in fields
            ]
            cursor.execute(queries.insert_new(model, connection, fields, unique, returning,
                                              rows=len(chunk)), params)
            if convert is None:
                count += cursor.rowcount
            else:
                written.extend(convert(row) for row in cursor.fetchall())
    return written if convert is not None else count


#: Rows per statement of ``insert_new`` (SQLite allows 32,766 parameters per statement).
_INSERT_CHUNK = 1000


def _insert_fields(model: Any, skip: str | None = None) -> list[Any]:
    """The fields a new row of ``model`` writes, as the ORM's INSERT would: every concrete
    field but the auto primary key and ``skip``."""
    return [
        field for field in model._meta.concrete_fields
        if not (field.primary_key and field.get_internal_type() in _AUTO) and field.name != skip
    ]


_AUTO = ("AutoField", "BigAutoField", "SmallAutoField")


def _insert_params(obj: Any, fields: list[Any], connection: Any) -> list[Any]:
    """The values of ``fields`` of a new row, prepared as the ORM's INSERT prepares them
    (Python defaults and ``pre_save`` applied)."""
    return [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]


def _linked_statement(parent_model: Any, child_model: Any, link: str,
                      connection: Any) -> tuple[str, list[Any], list[Any]]:
    """(statement, parent fields, child fields) of ``insert_linked``, found once per pair of
    models and database vendor: ``.delay()`` runs it every time."""
    key = (parent_model, child_model, link, connection.vendor)
    known = _LINKED.get(key)
    if known is None:
        p_fields = _insert_fields(parent_model)
        c_fields = _insert_fields(child_model, skip=link)
        sql = queries.insert_linked(parent_model, child_model, link, connection, p_fields,
                                    c_fields)
        known = _LINKED[key] = (sql, p_fields, c_fields)
    return known


_LINKED: dict[tuple[Any, ...], tuple[str, list[Any], list[Any]]] = {}


@contextmanager
def bound_cursor(connection: Any) -> Iterator[Any]:
    """A cursor whose parameters travel beside the statement (psycopg 3's server-side
    binding), wrapped as Django wraps its own (execute wrappers, query logging).

    Django's default psycopg 3 cursor quotes every parameter into the statement's text in
    Python (about a seventh of a ``.delay()``'s Python time in a profile). Nothing is
    prepared (``prepare_threshold`` stays Django's ``None``), so transaction-mode connection
    poolers keep working. With psycopg 2 or another database this is ``connection.cursor()``.
    """
    factory = None
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql import base as postgresql

        factory = getattr(postgresql, "ServerBindingCursor", None)  # psycopg 3 only
    if factory is None:
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = factory(connection.connection)
    with connection._prepare_cursor(raw) as cursor:
        yield cursor


def insert_linked(parent: Any, child: Any, link: str, using: str | None = None) -> bool:
    """Insert a new ``parent`` and a new ``child`` whose foreign key ``link`` points to it in
    ONE statement, and set both primary keys; False (nothing written) where the database
    cannot (only PostgreSQL has data-modifying CTEs: callers then insert them one by one).

    ``WITH p AS (INSERT ... RETURNING id) INSERT INTO child VALUES ((SELECT id FROM p), ...)``:
    a single statement is atomic by itself, so outside a transaction it needs no
    BEGIN/COMMIT: one round trip instead of four.
    """
    using = using or router.db_for_write(type(parent))
    connection = connections[using]
    if connection.vendor != "postgresql":
        return False
    sql, p_fields, c_fields = _linked_statement(type(parent), type(child), link, connection)
    params = _insert_params(parent, p_fields, connection)
    params += _insert_params(child, c_fields, connection)
    with bound_cursor(connection) as cursor:
        cursor.execute(sql, params)
        parent_pk, child_pk = cursor.fetchone()
    fk = child._meta.get_field(link)
    parent.pk = parent_pk
    setattr(child, fk.attname, parent_pk)
    setattr(child, link, parent)
    child.pk = child_pk
    for obj in (parent, child):
        obj._state.adding = False
        obj._state.db = using
    return True


def _json_value(value: Any) -> Any:
    """What ``json.dumps`` cannot write by itself, as PostgreSQL reads it back from text."""
    kind = type(value)
    if kind is uuid.UUID:  # the common cases first: called once per value of a bulk write
        return str(value)
    if kind is datetime:
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} in a JSON row set")


def _remembering() -> Callable[[Any], Any]:
    """``_json_value`` remembering, for one document, what it wrote for each object: a bulk
    write repeats the same datetime objects in every row (the beat's slot and next fire
    time, ``now``). By identity, not equality: equal datetimes in different time zones, or
    ``Decimal("1.0")`` and ``Decimal("1.00")``, are written as given. The rows keep every
    object alive while the document is written, so no id is reused meanwhile.
    Measured: 10,000 rows of two datetimes took 38 ms to write, 10 ms remembering."""
    written: dict[int, Any] = {}

    def default(value: Any) -> Any:
        text = written.get(id(value))
        if text is None:
            text = written[id(value)] = _json_value(value)
        return text

    return default


#: From this many rows a bulk statement runs with PostgreSQL's JIT compiler off.
NO_JIT_ROWS = 500


def without_jit(cursor: Any, connection: Any, rows: int) -> None:
    """Turn PostgreSQL's JIT compiler off for the rest of the transaction before a bulk
    statement of ``rows`` rows. Its cost estimate puts a 10,000-row insert over
    ``jit_above_cost``, and compiling took longer than the statement itself (measured on a beat
    minute with 10,000 due schedules: 0.3-0.4 s of 2.2 s). Nothing happens outside a
    transaction, on other databases, or for small statements."""
    if (rows >= NO_JIT_ROWS and connection.vendor == "postgresql"
            and connection.in_atomic_block):
        cursor.execute("SET LOCAL jit = off")


def json_rows(
    fields: list[Any], rows: Sequence[Sequence[Any]], connection: Any
) -> tuple[str, list[str]]:
    """(JSON document, select expressions) sending ``rows`` (values in the order of
    ``fields``) to PostgreSQL as one parameter, read with
    ``json_array_elements(%s::json) AS r(value)``. PostgreSQL parses it in C; thousands of
    rows as separate, array or ``VALUES`` parameters cost far more to adapt and to parse."""
    document = json.dumps(rows, separators=(",", ":"), default=_remembering())
    picks = [
        f"(r.value->{index})::jsonb" if field.get_internal_type() == "JSONField"
        else f"CAST(r.value->>{index} AS {_cast_type(field, connection)})"
        for index, field in enumerate(fields)
    ]
    return document, picks


def insert_many_linked(
    parent_model: Any, rows: Sequence[dict[str, Any]], common: dict[str, Any], key: str,
    child_model: Any, link: str, child_common: dict[str, Any], using: str | None = None,
    copied: Sequence[str] = (),
) -> list[tuple[int, int]] | None:
    """Insert one parent per row and one child linked to each in ONE statement; return
    ``(parent pk, child pk)`` in the order of ``rows``. None (nothing written) where the
    database is not PostgreSQL: callers then use ``bulk_create``.

    The varying values travel as one JSON document (``json_rows``). ``common`` values, the
    same for every row, are parameters; every other column gets its field's default,
    evaluated once (``created_at`` is one moment for the batch).
    ``key`` names a unique field given in every row: how returned primary keys are matched to
    rows. ``common`` and ``child_common`` may name foreign keys by attname (``group_id``).
    ``copied`` names fields the child takes from its parent's field of the same name.
    """
    using = using or router.db_for_write(parent_model)
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    if not rows:
        return []
    p_meta, c_meta = parent_model._meta, child_model._meta
    varying = [p_meta.get_field(name) for name in rows[0]]

    def constants(meta: Any, given: dict[str, Any], skip: set[str]) -> tuple[list, list, list]:
        columns, expressions, params = [], [], []
        for field in meta.concrete_fields:
            if field.primary_key or field.name in skip:
                continue
            if field.name in given or field.attname in given:
                value = given[field.name if field.name in given else field.attname]
            else:
                value = field.get_default()
            column, expression, param = prepared(meta.model, field.name, value, using)
            columns.append(column)
            expressions.append(expression)
            params.append(param)
        return columns, expressions, params

    p_cols, p_exprs, p_params = constants(p_meta, common, {f.name for f in varying})
    c_cols, c_exprs, c_params = constants(c_meta, child_common, {link, *copied})
    _, picks = json_rows(varying, [], connection)
    sql = queries.insert_many_linked(parent_model, child_model, link, key, connection, varying,
                                     picks, p_cols, p_exprs, c_cols, c_exprs, copied)
    returned: dict[Any, tuple[int, int]] = {}
    with connection.cursor() as cursor:
        without_jit(cursor, connection, len(rows))
        for start in range(0, len(rows), _LINKED_CHUNK):
            chunk = rows[start:start + _LINKED_CHUNK]
            document, _ = json_rows(
                varying, [[row[field.name] for field in varying] for row in chunk], connection
            )
            cursor.execute(sql, [*p_params, document, *c_params])
            returned.update((row[0], (row[1], row[2])) for row in cursor.fetchall())
    return [returned[row[key]] for row in rows]


#: Rows per statement of ``insert_many_linked`` (bounds the JSON document's size).
_LINKED_CHUNK = 5000


def _cast_type(field: Any, connection: Any) -> str:
    """The type to cast a parameter to for ``field``'s column. Text for character columns:
    an explicit cast to ``varchar(n)`` would cut a long value silently, while the assignment
    to the column refuses it (as the ORM's INSERT does)."""
    if field.get_internal_type() in ("CharField", "TextField", "SlugField", "EmailField"):
        return "text"
    return field.db_type(connection)


def prepared(model: Any, name: str, value: Any, using: str) -> tuple[str, str, Any]:
    """(quoted column, ``CAST(%s AS type)``, value prepared for the database) of one field,
    for hand-written statements whose parameters PostgreSQL cannot type from context (an
    ``INSERT ... SELECT`` list)."""
    connection = connections[using]
    field = model._meta.get_field(name)
    return (
        connection.ops.quote_name(field.column),
        f"CAST(%s AS {_cast_type(field, connection)})",
        field.get_db_prep_save(value, connection),
    )


def fetch_one(sql: str, params: list[Any], using: str) -> tuple:
    """Run one hand-written statement and return its single row."""
    with bound_cursor(connections[using]) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def claim_row(cursor: Any, connection: Any) -> tuple[tuple | None, bool]:
    """``(row, claimed)`` of a claim statement just run (``queries.claim_try``): with
    ``RETURNING`` the returned row says it (SQLite sets no rowcount before a fetch)."""
    if connection.features.can_return_columns_from_insert:
        row = cursor.fetchone()
        return row, row is not None
    return None, cursor.rowcount > 0


def row_moment(row: tuple | None) -> datetime | None:
    """The first column of a hand-written statement's row as an aware datetime, or ``None``
    (SQLite gives timestamps as text in UTC)."""
    value = row[0] if row else None
    if isinstance(value, str):
        value = parse_datetime(value)
    if isinstance(value, datetime) and timezone.is_naive(value):
        value = value.replace(tzinfo=dt_timezone.utc)
    return value if isinstance(value, datetime) else None
