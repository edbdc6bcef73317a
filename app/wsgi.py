"""WSGI entry point for gunicorn: `gunicorn tributary.app.wsgi:app`."""

from __future__ import annotations

from tributary.app import create_app

app = create_app()
