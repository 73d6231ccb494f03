"""Job states and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from ckptd.queue.errors import InvalidTransitionError


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # will be retried once ``not_before`` has passed
    DEAD = "dead"  # out of attempts or a permanent error; only a manual retry revives it
    CANCELLED = "cancelled"
    WAITING = "waiting"  # held back (e.g. disk guard); claimable again once ``not_before`` has passed


INITIAL_STATE = JobState.QUEUED

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.DONE,
            JobState.FAILED,
            JobState.DEAD,
            JobState.QUEUED,  # released on shutdown, or reaped after its lease expired
            JobState.WAITING,
            JobState.CANCELLED,
        }
    ),
    JobState.FAILED: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.CANCELLED}),
    JobState.WAITING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.DONE: frozenset({JobState.QUEUED}),
    JobState.DEAD: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}

# Claimed in one query: queued at once, failed/waiting once their ``not_before`` has passed.
CLAIMABLE_STATES = frozenset({JobState.QUEUED, JobState.FAILED, JobState.WAITING})
TERMINAL_STATES = frozenset({JobState.DONE, JobState.DEAD, JobState.CANCELLED})
# What an operator's retry may revive; a running job must be cancelled first.
RETRYABLE_STATES = frozenset({JobState.DONE, JobState.DEAD, JobState.CANCELLED, JobState.FAILED})


def is_allowed(current: JobState, target: JobState) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def check_transition(current: JobState | str, target: JobState | str) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current -> target`` is in the table."""
    current_state, target_state = JobState(current), JobState(target)
    if not is_allowed(current_state, target_state):
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current_state])) or "nothing"
        raise InvalidTransitionError(
            f"job state {current_state} cannot become {target_state}"
            f" (allowed from {current_state}: {allowed})"
        )
