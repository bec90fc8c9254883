"""Database helpers shared by the execution path."""

from __future__ import annotations

from typing import Any, cast

from django.db import IntegrityError, connections, router, transaction
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery


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
    learns that it wrote the row. Other databases insert row by row in savepoints.
    """
    if not rows:
        return []
    connection = connections[router.db_for_write(model)]
    convert = _converters(model, returning, connection)
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
                                 for n in returning))
        return written
    quote = connection.ops.quote_name
    head = (
        f"INSERT INTO {quote(model._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in fields)}) VALUES "
    )
    tail = (
        f" ON CONFLICT ({', '.join(quote(model._meta.get_field(n).column) for n in unique)})"
        " DO NOTHING RETURNING "
        + ", ".join(quote(model._meta.get_field(n).column) for n in returning)
    )
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    written = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start:start + _INSERT_CHUNK]
            params = [
                field.get_db_prep_save(row[field.name], connection)
                for row in chunk
                for field in fields
            ]
            cursor.execute(head + ", ".join([placeholders] * len(chunk)) + tail, params)
            written.extend(convert(row) for row in cursor.fetchall())
    return written


#: Rows per statement of ``insert_new`` (SQLite allows 32,766 parameters per statement).
_INSERT_CHUNK = 1000


def _insert_values(obj: Any, connection: Any, skip: str | None = None) -> tuple[list, list]:
    """(quoted columns, prepared values) of a new row, as the ORM's INSERT would send them
    (Python defaults and ``pre_save`` applied); the auto primary key and ``skip`` left out."""
    meta = obj._meta
    columns, values = [], []
    for field in meta.concrete_fields:
        if field.primary_key and field.get_internal_type() in _AUTO or field.name == skip:
            continue
        columns.append(connection.ops.quote_name(field.column))
        values.append(field.get_db_prep_save(field.pre_save(obj, True), connection))
    return columns, values


_AUTO = ("AutoField", "BigAutoField", "SmallAutoField")


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
    quote = connection.ops.quote_name
    p_cols, p_vals = _insert_values(parent, connection)
    c_cols, c_vals = _insert_values(child, connection, skip=link)
    p_meta, c_meta = parent._meta, child._meta
    fk = c_meta.get_field(link)
    sql = (
        f"WITH p AS (INSERT INTO {quote(p_meta.db_table)} ({', '.join(p_cols)}) "
        f"VALUES ({', '.join(['%s'] * len(p_vals))}) RETURNING {quote(p_meta.pk.column)}) "
        f"INSERT INTO {quote(c_meta.db_table)} ({quote(fk.column)}, {', '.join(c_cols)}) "
        f"VALUES ((SELECT {quote(p_meta.pk.column)} FROM p), "
        f"{', '.join(['%s'] * len(c_vals))}) "
        f"RETURNING {quote(fk.column)}, {quote(c_meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*p_vals, *c_vals])
        parent_pk, child_pk = cursor.fetchone()
    parent.pk = parent_pk
    setattr(child, fk.attname, parent_pk)
    setattr(child, link, parent)
    child.pk = child_pk
    for obj in (parent, child):
        obj._state.adding = False
        obj._state.db = using
    return True


def prepared(model: Any, name: str, value: Any, using: str) -> tuple[str, str, Any]:
    """(quoted column, ``CAST(%s AS type)``, value prepared for the database) of one field,
    for hand-written statements whose parameters PostgreSQL cannot type from context (an
    ``INSERT ... SELECT`` list)."""
    connection = connections[using]
    field = model._meta.get_field(name)
    return (
        connection.ops.quote_name(field.column),
        f"CAST(%s AS {field.db_type(connection)})",
        field.get_db_prep_save(value, connection),
    )


def fetch_one(sql: str, params: list[Any], using: str) -> tuple:
    """Run one hand-written statement and return its single row."""
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()
