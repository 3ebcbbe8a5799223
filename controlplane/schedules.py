"""
The periodic jobs, kept in django-celery-beat's tables so the admin can change their periods.

Rows are created when missing and never overwritten, so a period changed in the admin
survives deploys and restarts.
"""

PERIODIC_TASKS = {
    # name: (task, every N seconds, expires after N seconds)
    "Flush buffered exposures": ("rollout.tasks.exposure_buffer_flush", 10, 60),
    "Judge running rollouts": ("experiments.tasks.judge_all", 300, 450),
    "Attribute outcome events": ("experiments.tasks.events_attribute_task", 30, 60),
    "Redeliver pending alerts": ("experiments.tasks.alerts_redeliver", 900, 1200),
}


def periodic_tasks_ensure(*, using: str = "default") -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for name, (task, every, expires) in PERIODIC_TASKS.items():
        if PeriodicTask.objects.using(using).filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.using(using).get_or_create(
            every=every, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.using(using).create(
            name=name, task=task, interval=interval, expire_seconds=expires
        )
