"""Bringing existing customers in: provider list APIs and CSV files turned into stored events.

An import never writes customer records itself. Each listed object becomes one or more events on
the `import` channel, stored and deduplicated like webhooks, and applied by the worker's batch code
with the object's own time, so the merge clocks decide between an import and a webhook exactly as
they decide between two webhooks (workers/batch/merge_rules.py).

- `items.py`: what a provider module yields (`Listed`, `ImportEvent`) and the offline normalization
  that computes each event's changes and dedup digest with the connector's own `normalize`.
- `pipeline.py`: stores events in batches with the source's checkpoint, applies them, tallies.
- `channel.py`: the worker side of the `import` channel.
- `stripe_list.py`, `users.py`, `csv_rows.py`: the sources of objects.
- `reconcile.py`: compare records with Stripe's current state, and fix drift.
- `runs.py`: the `imports` rows that the admin API starts and follows.
"""
