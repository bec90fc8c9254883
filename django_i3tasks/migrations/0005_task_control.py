# Task control (issue 12): expiry, unique keys, cancel requests, progress, new statuses.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_i3tasks', '0004_schedule_state'),
    ]

    operations = [
        migrations.AddField(
            model_name='taskexecution',
            name='cancel_requested_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='taskexecution',
            name='expires_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='taskexecution',
            name='unique_key',
            field=models.CharField(blank=True, default='', max_length=255),
        ),
        migrations.AddField(
            model_name='taskexecutiontry',
            name='progress',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='taskexecution',
            name='status',
            field=models.CharField(choices=[('waiting', 'waiting'), ('scheduled', 'scheduled'), ('pending', 'pending'), ('success', 'success'), ('failed', 'failed'), ('skipped', 'skipped'), ('cancelled', 'cancelled'), ('expired', 'expired')], default='pending', max_length=16),
        ),
        migrations.AlterField(
            model_name='taskexecutiontry',
            name='status',
            field=models.CharField(choices=[('queued', 'queued'), ('running', 'running'), ('success', 'success'), ('failed', 'failed'), ('cancelled', 'cancelled'), ('expired', 'expired')], default='queued', max_length=16),
        ),
        migrations.AddConstraint(
            model_name='taskexecution',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ('waiting', 'scheduled', 'pending')), models.Q(('unique_key', ''), _negated=True)), fields=('unique_key',), name='i3_exec_unique_key_open'),
        ),
    ]
