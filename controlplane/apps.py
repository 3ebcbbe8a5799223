from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Access"

    def ready(self):
        # Connected for every app: the groups need the permissions of all apps, which exist
        # only once the last app's post_migrate has run. Both steps are idempotent.
        post_migrate.connect(_after_migrate, dispatch_uid="cohort.after_migrate")


def _after_migrate(sender, using="default", **kwargs):
    from .roles import role_groups_sync
    from .schedules import periodic_tasks_ensure

    role_groups_sync(using=using)
    periodic_tasks_ensure(using=using)
