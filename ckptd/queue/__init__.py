"""SQLite-backed (PostgreSQL-ready) job queue: leases, fencing tokens, retries with backoff.

Layers, bottom up: ``states`` (the state machine) → ``models`` (schema) → ``engine``/``schema``
(connections, migrations) → ``dialect``/``transitions`` (SQL) → ``repository`` (the API workers use).
"""

from __future__ import annotations
