from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"

    def ready(self):
        from rollout.signals import exposures_changed

        from .events.attribution import on_exposures_changed

        exposures_changed.connect(on_exposures_changed, dispatch_uid="experiments.discard_stale")

        # Here and not in tasks.py: a web process never imports tasks.py on its own, and it
        # raises alerts too (experiments/signals.py says why a signal).
        from .signals import alert_deliveries_pending
        from .tasks import on_alert_deliveries_pending

        alert_deliveries_pending.connect(
            on_alert_deliveries_pending, dispatch_uid="experiments.alert_deliveries_queue"
        )
