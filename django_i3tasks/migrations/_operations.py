"""Migration operations shared by this app's migrations (a module whose name starts with
``_`` is not read as a migration)."""

from django.db import migrations
from django.db.migrations.operations.base import Operation


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """``AddIndex``, built ``CONCURRENTLY`` on PostgreSQL (no write lock on the table)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


class RestrictDeletesOnPostgres(Operation):
    """On PostgreSQL, make the foreign key of ``model_name.field_name`` ``ON DELETE RESTRICT``
    instead of Django's ``NO ACTION``; it stays ``DEFERRABLE INITIALLY DEFERRED``.

    Why: PostgreSQL checks a ``NO ACTION`` key once per deleted row, at commit, with two
    queries (has a row with the same key come back, and does anything still point at it);
    ``RESTRICT`` with one, at the end of the deleting statement. That is most of what
    ``i3tasks_clean`` costs (``bench/scale.py``). The guarantee is the same for every delete
    that removes or unlinks what points at a row before it or in the same statement, as
    Django's deletion collector and ``i3tasks_clean`` do; a delete that leaves the pointing
    rows for later in the transaction is refused at once instead of at commit. Inserts and
    updates are still checked at commit.

    Not atomic: each key is dropped and added ``NOT VALID`` in one statement that scans
    nothing (its exclusive lock waits for the transactions using the tables, like any ``ALTER
    TABLE``, then is held for a moment), then validated without blocking writes. The model
    state does not change: Django describes foreign keys without their delete action.
    """

    reversible = True

    def __init__(self, model_name: str, field_name: str) -> None:
        self.model_name = model_name
        self.field_name = field_name

    def deconstruct(self):
        return self.__class__.__name__, [self.model_name, self.field_name], {}

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._set(app_label, schema_editor, to_state, "RESTRICT")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._set(app_label, schema_editor, from_state, "NO ACTION")

    def describe(self):
        return (f"Foreign key {self.model_name}.{self.field_name}: ON DELETE RESTRICT on "
                "PostgreSQL")

    def _set(self, app_label, schema_editor, state, action: str) -> None:
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            return
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(connection.alias, model):
            return
        field = model._meta.get_field(self.field_name)
        table, column = model._meta.db_table, field.column
        target = field.target_field
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.conname FROM pg_constraint c JOIN pg_attribute a "
                "ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
                "WHERE c.contype = 'f' AND c.conrelid = to_regclass(%s) AND a.attname = %s "
                "AND cardinality(c.conkey) = 1",
                [connection.ops.quote_name(table), column],
            )
            names = [row[0] for row in cursor.fetchall()]
        quote = schema_editor.quote_name
        for name in names:  # one; none when the field has db_constraint=False
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}, "
                f"ADD CONSTRAINT {quote(name)} FOREIGN KEY ({quote(column)}) "
                f"REFERENCES {quote(target.model._meta.db_table)} ({quote(target.column)}) "
                f"ON DELETE {action} DEFERRABLE INITIALLY DEFERRED NOT VALID"
            )
            schema_editor.execute(f"ALTER TABLE {quote(table)} VALIDATE CONSTRAINT {quote(name)}")
