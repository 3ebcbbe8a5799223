from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Access"

    def ready(self):
        # Groups need the permissions of every app, which exist only after migrate.
        post_migrate.connect(_sync_role_groups, dispatch_uid="cohort.role_groups_sync")


def _sync_role_groups(sender, using="default", **kwargs):
    from .roles import role_groups_sync

    role_groups_sync(using=using)
