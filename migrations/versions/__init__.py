"""Alembic revisions; alembic loads these files itself."""
