"""Alembic migrations for the queue schema (installed as ``ckptd._migrations``; see ckptd.queue.schema)."""
