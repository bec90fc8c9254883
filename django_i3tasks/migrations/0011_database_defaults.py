"""Database-level defaults for the columns 0009 and 0010 added as NOT NULL, on PostgreSQL.

Django keeps a field's default in Python only, so during a rolling deploy, code from before
these migrations inserts executions and groups without the new columns and fails. Statements
written by hand (bulk fills, the scale benchmark) need the defaults too. SQLite keeps the
columns as Django made them: it has no ALTER COLUMN ... SET DEFAULT.
"""

from django.db import migrations

DEFAULTS = (
    ("django_i3tasks_taskexecution", "pipe", "false"),
    ("django_i3tasks_taskexecution", "concurrency_key", "''"),
    ("django_i3tasks_taskexecution", "wait_reason", "''"),
    ("django_i3tasks_taskgroup", "pass_results", "false"),
    ("django_i3tasks_taskgroup", "next_position", "0"),
)


def _alter(schema_editor, clause):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for table, column, value in DEFAULTS:
        schema_editor.execute(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} "
                              + clause.format(value=value))


def set_defaults(apps, schema_editor):
    _alter(schema_editor, "SET DEFAULT {value}")


def drop_defaults(apps, schema_editor):
    _alter(schema_editor, "DROP DEFAULT")


class Migration(migrations.Migration):
    dependencies = [("django_i3tasks", "0010_execution_limits")]

    operations = [migrations.RunPython(set_defaults, drop_defaults)]
