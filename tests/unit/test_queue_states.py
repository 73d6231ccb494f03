from __future__ import annotations

import itertools

import pytest

from ckptd.errors import CkptdError
from ckptd.queue.errors import InvalidTransitionError
from ckptd.queue.states import ALLOWED_TRANSITIONS, CLAIMABLE_STATES, JobState, check_transition


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobState)


def test_values_are_the_contract_spellings() -> None:
    spellings = ["queued", "running", "done", "failed", "dead", "cancelled", "waiting"]
    assert [str(s) for s in JobState] == spellings


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "running"),
        ("running", "done"),
        ("running", "failed"),
        ("running", "dead"),
        ("running", "queued"),
        ("running", "waiting"),
        ("running", "cancelled"),
        ("failed", "running"),
        ("waiting", "running"),
        ("dead", "queued"),
        ("done", "queued"),
        ("cancelled", "queued"),
        ("queued", "cancelled"),
    ],
)
def test_allowed_transitions_pass(current: str, target: str) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "done"),
        ("queued", "queued"),
        ("done", "running"),
        ("dead", "running"),
        ("cancelled", "running"),
        ("done", "cancelled"),
        ("failed", "done"),
        ("waiting", "done"),
    ],
)
def test_forbidden_transitions_raise_a_one_line_error(current: str, target: str) -> None:
    with pytest.raises(InvalidTransitionError) as excinfo:
        check_transition(JobState(current), JobState(target))
    assert isinstance(excinfo.value, CkptdError)
    assert "\n" not in str(excinfo.value)
    assert f"{current} cannot become {target}" in str(excinfo.value)


def test_only_running_jobs_finish() -> None:
    pairs = itertools.product(JobState, JobState)
    finishers = {s for s, t in pairs if t == JobState.DONE and t in ALLOWED_TRANSITIONS[s]}
    assert finishers == {JobState.RUNNING}


def test_every_claimable_state_can_start_running() -> None:
    for state in CLAIMABLE_STATES:
        check_transition(state, JobState.RUNNING)


def test_unknown_state_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="bogus"):
        check_transition("bogus", "queued")
