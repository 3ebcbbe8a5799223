"""
The door to every change of state in experiments.

The entry points (the SDK events endpoint, the management API, the admin, the periodic tasks
and the commands) call these and nothing deeper; `tests/unit/test_architecture.py` holds them
to it. Each name is defined in the module that owns the behaviour:

- `events_ingest`: a device's batch of outcome events, validated, stored and counted
  (`events.ingest`).
- `ledger_catch_up`, `events_attribute`: the attribution job (`events.attribution`).
- `rollout_analyze`: one look of the judge at a rollout, and its actions (`judge`).
- `alert_delivery_attempt`: alert deliveries (`alerts`).
- `alert_status_change`: acknowledging, dismissing (with a reason) or resolving an alert
  (`alerts`).
- `channel_create`, `channel_update`, `channel_delete`: an app's alert channels, which start
  and stop receiving alerts as they are saved (`alerts`).
"""

from .alerts import (
    alert_delivery_attempt,
    alert_status_change,
    channel_create,
    channel_delete,
    channel_update,
)
from .events.attribution import events_attribute, ledger_catch_up
from .events.ingest import events_ingest
from .judge import rollout_analyze

__all__ = [
    "alert_delivery_attempt",
    "alert_status_change",
    "channel_create",
    "channel_delete",
    "channel_update",
    "events_attribute",
    "events_ingest",
    "ledger_catch_up",
    "rollout_analyze",
]
