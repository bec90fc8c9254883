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
