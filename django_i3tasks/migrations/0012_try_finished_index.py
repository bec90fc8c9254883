# The window of finished tries that the admin dashboard and ``i3tasks stats`` read
# ("finished since ..."), served by an index instead of a scan of every try kept (issue 28's
# 10-million-row run). Partial: a queued or running try has no entry. Built with
# CREATE INDEX CONCURRENTLY on PostgreSQL, so migrating a live database does not block writes
# (hence atomic = False).

from django.db import migrations, models

from ._operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ("django_i3tasks", "0011_database_defaults"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="taskexecutiontry",
            index=models.Index(condition=models.Q(finished_at__isnull=False),
                               fields=["finished_at"], name="i3_try_finished"),
        ),
    ]
