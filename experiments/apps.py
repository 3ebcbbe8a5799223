from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"

    def ready(self):
        from rollout.signals import exposures_changed

        from .events.attribution import on_exposures_changed

        exposures_changed.connect(on_exposures_changed, dispatch_uid="experiments.discard_stale")
