"""Tributary: a self-hosted headless CRM fed by webhooks.

The installed distribution has one top-level package, `tributary`, so that nothing of it collides
with another distribution's `app` or `models`. In the source tree its subpackages are the fixed
top-level folders (`app/`, `connectors/`, `workers/`, `models/`, `runtime/`, `migrations/`),
linked here.
"""
