"""Signals of the exposure ledger, for apps that keep data derived from it."""

from django.dispatch import Signal

# Sent inside the transaction that may have moved devices of a rollout to another arm or made
# them no longer comparable, once their exposure rows are written (and locked).
# Arguments: rollout_id, and device_ids: a list, or None for any device of the rollout.
exposures_changed = Signal()
