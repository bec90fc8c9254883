import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_i3tasks", "0008_periodic_task")]

    operations = [
        migrations.AddField(
            model_name="taskexecution",
            name="pipe",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="taskexecution",
            name="position",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="taskexecution",
            name="on_failure",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="taskexecution",
            name="handler_of",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                related_name="failure_handlers", to="django_i3tasks.taskexecution",
            ),
        ),
        migrations.AddField(
            model_name="taskgroup",
            name="pass_results",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="taskgroup",
            name="next_position",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="taskgroup",
            name="on_failure",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="taskgroup",
            name="failure_handler",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                related_name="+", to="django_i3tasks.taskexecution",
            ),
        ),
    ]
