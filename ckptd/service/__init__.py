"""Running as a service: systemd notify, health, metrics, post-conversion hooks, disk guard."""

from __future__ import annotations
