import django.utils.timezone
from django.db import migrations, models

import django_i3tasks.models


class Migration(migrations.Migration):

    dependencies = [
        ("django_i3tasks", "0007_scale_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="PeriodicTask",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200, unique=True)),
                ("task_name", models.CharField(help_text="A registered task's dotted name.", max_length=255)),
                ("cron", models.CharField(help_text='Five fields, e.g. "*/5 * * * *".', max_length=100)),
                ("timezone", models.CharField(default=django_i3tasks.models._default_timezone, max_length=64)),
                ("args", models.JSONField(blank=True, default=list)),
                ("kwargs", models.JSONField(blank=True, default=dict)),
                ("queue_name", models.CharField(blank=True, default="", help_text="Empty: the task's own queue.", max_length=100)),
                ("enabled", models.BooleanField(default=True)),
                ("description", models.TextField(blank=True)),
                ("revision", models.PositiveIntegerField(default=0, editable=False)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "verbose_name": "periodic task",
                "ordering": ("name",),
            },
        ),
        migrations.CreateModel(
            name="Dashboard",
            fields=[],
            options={
                "verbose_name": "dashboard",
                "verbose_name_plural": "dashboard",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("django_i3tasks.taskexecution",),
        ),
    ]
