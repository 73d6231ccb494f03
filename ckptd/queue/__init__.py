"""SQLite-backed (PostgreSQL-ready) job queue: leases, fencing tokens, retries with backoff.

Layers, bottom up: ``states`` (the state machine) → ``models`` (schema) → ``engine``/``schema``
(connections, migrations) → ``dialect``/``transitions``/``queries`` (SQL) → ``repository`` (the API
workers, the daemon and the CLI use; ``workers`` is its worker-registry half). ``records`` holds the
frozen values handed to callers, ``backoff`` the retry delays.
"""

from __future__ import annotations
