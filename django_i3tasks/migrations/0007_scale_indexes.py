# Indexes for tables of tens of millions of rows (issue 28). On PostgreSQL they are built with
# CREATE INDEX CONCURRENTLY, so migrating a live database does not block writes (hence
# atomic = False); other databases build them as usual.
#
# i3_exec_status_finished: the health endpoint's "failed in the last hour" and the clean-up's
# batches ("finished before the cutoff", oldest first) read an index range instead of every
# failed or finished execution.
# i3_try_running_lease (partial, running tries only): the recovery sweep and the health
# check find expired leases without reading every running try.

from django.db import migrations, models

from ._operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ("django_i3tasks", "0006_execution_expires_after"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="taskexecution",
            index=models.Index(fields=["status", "finished_at"], name="i3_exec_status_finished"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="taskexecutiontry",
            index=models.Index(condition=models.Q(status="running"), fields=["lease_expires_at"],
                               name="i3_try_running_lease"),
        ),
    ]
