"""The worker's batch core: applying a batch of claimed events to customer records.

- `apply.py` drives a batch: claim, normalize, merge each event, write back (`apply_events`).
- `state.py` loads and holds the batch's rows (`BatchState`); no writes of its own.
- `overlay.py` holds everything one event would change (`EventOverlay`), with one `commit`.
- `identity_resolution.py`, `merge_rules.py`, `customer_union.py`, `email_record.py`: pure rules
  (whose change it is; field merges; uniting two customers; address clocks).
- `write_back.py` owns every SQL write of a batch.

Beside it: workers/isolation.py applies a batch the database refused again in halves, and
workers/deferred.py holds the events that wait for their person.
"""
