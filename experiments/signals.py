"""Signals of experiments, for the layer that queues background jobs.

`alerts` records deliveries and says so; `tasks` listens and queues them (connected in
`ExperimentsConfig.ready`, so every process that raises an alert, web or worker, queues it).
Why not a call: `tasks` imports the judge, the judge imports `alerts`, and `alerts` importing
`tasks` back closed a circle (#9). Why not `send_task` by name: it ignores
CELERY_TASK_ALWAYS_EAGER, so tests and eager deployments would queue to a broker nobody reads.
"""

from django.dispatch import Signal

# Sent after the transaction that created or revived the deliveries has committed.
# Arguments: delivery_ids, a list of pending AlertDelivery ids.
alert_deliveries_pending = Signal()
