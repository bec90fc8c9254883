"""Tries carry their execution's task name, so a window of tries (the admin dashboard,
``i3tasks stats``) is read from the tries table alone, without a join (issue 26).

Adding a column with a constant default does not rewrite the table on PostgreSQL 11+.
Existing tries keep "": the readers look their execution up (``queries.try_task``), so no
backfill runs here. On PostgreSQL the column keeps a database default of "", because code from
before this migration, still running during a rolling deploy, inserts tries without it.
"""

from django.db import migrations, models


def set_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE "django_i3tasks_taskexecutiontry" '
                              "ALTER COLUMN \"task_name\" SET DEFAULT ''")


def drop_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE "django_i3tasks_taskexecutiontry" '
                              'ALTER COLUMN "task_name" DROP DEFAULT')


class Migration(migrations.Migration):
    dependencies = [("django_i3tasks", "0012_try_finished_index")]

    operations = [
        migrations.AddField(
            model_name="taskexecutiontry",
            name="task_name",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.RunPython(set_default, drop_default),
    ]
