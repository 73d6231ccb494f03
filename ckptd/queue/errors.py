"""Queue-specific errors (the shared ones, such as ``LeaseLostError``, live in ``ckptd.errors``)."""

from __future__ import annotations

from ckptd.errors import CkptdError


class InvalidTransitionError(CkptdError):
    """A state change the state machine forbids; a bug in the caller, so never retried."""

    permanent = True


class JobNotFoundError(CkptdError):
    permanent = True


class SchemaError(CkptdError):
    """The database schema does not match this version of ckptd."""

    permanent = True


class ConcurrentUpdateError(CkptdError):
    """A job changed under a transaction that should have held it locked; safe to retry."""

    permanent = False
