"""
The events wing: outcome events from devices, from the request to the per-device outcome rows
the analysis sums.

Ground floor, pure (no Django):
- `validation`: checking a batch, event by event, with stable rejection codes.
- `rules`: what an event counts for (`RolloutTerms.counts`), a device's tally in an arm, and
  when nothing can count a flow's events any more.

Above it:
- `store`: writing a batch, each event once per app (`INSERT ... ON CONFLICT DO NOTHING`).
- `count_on_arrival`: on PostgreSQL, storing a batch and counting it for the device's arm in
  one statement, when the device's exposure is already in the ledger.
- `ingest`: the service the SDK endpoint calls: validate, store, count what can be counted.
- `attribution`: the periodic job that counts the rest (events whose exposure was buffered,
  late events of ended rollouts), keeps outcome rows in step with the ledger, and moves the
  ledger's checkpoint.
"""
