"""Alembic migrations, shipped as a package so `tributary db upgrade` works from any install."""
