from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_i3tasks", "0005_task_control")]

    operations = [
        migrations.AddField(
            model_name="taskexecution",
            name="expires_after",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
