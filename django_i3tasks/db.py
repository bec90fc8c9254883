"""Database helpers shared by the execution path."""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
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
    if connection.vendor in ("postgresql", "sqlite"):
        query = queryset.query.chain(UpdateQuery)
        query.add_update_values(values)
        sql, params = query.get_compiler(using).as_sql()
        if not sql:
            return []
        columns = ", ".join(
            connection.ops.quote_name(model._meta.get_field(name).column) for name in returning
        )
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} RETURNING {columns}", params)
            return [tuple(row) for row in cursor.fetchall()]
    with transaction.atomic(using=using, savepoint=False):
        pks = list(queryset.select_for_update().values_list("pk", flat=True))
        if not pks:
            return []
        model._default_manager.using(using).filter(pk__in=pks).update(**values)
        return list(
            model._default_manager.using(using).filter(pk__in=pks).values_list(*returning)
        )
