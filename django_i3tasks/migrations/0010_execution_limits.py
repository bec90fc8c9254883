from django.db import migrations, models


class Migration(migrations.Migration):
    """Limits: the call's ``concurrency_key`` and why a parked execution waits."""

    dependencies = [("django_i3tasks", "0009_workflow_results")]

    operations = [
        migrations.AddField(
            model_name="taskexecution",
            name="concurrency_key",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="taskexecution",
            name="wait_reason",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.AddIndex(
            model_name="taskexecution",
            index=models.Index(fields=["task_name", "concurrency_key", "status"],
                               name="i3_exec_task_key_status"),
        ),
    ]
