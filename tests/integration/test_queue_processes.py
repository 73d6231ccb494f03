"""The queue across real processes: concurrent claimers, and a claimer killed with SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from ckptd.errors import LeaseLostError
from ckptd.queue.states import JobState
from tests.integration.queue_support import (
    FakeClock,
    claim_and_hang,
    claim_until_empty,
    db_url,
    enqueue_step,
    open_repo,
)

SPAWN = multiprocessing.get_context("spawn")
JOBS = 300
CLAIMERS = 4


def test_concurrent_claimers_finish_every_job_exactly_once(tmp_path: Path) -> None:
    url = db_url(tmp_path / "ckptd.db")
    repo = open_repo(url)
    ids = {enqueue_step(repo, step).id for step in range(JOBS)}
    reports = [tmp_path / f"report-{n}.json" for n in range(CLAIMERS)]
    marker = str(tmp_path / "publishing")

    processes = [
        SPAWN.Process(target=claim_until_empty, args=(url, f"w{n}", str(report), marker), daemon=True)
        for n, report in enumerate(reports)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    results = [json.loads(report.read_text()) for report in reports]
    published = [job_id for result in results for job_id in result["published"]]
    assert [error for result in results for error in result["errors"]] == []
    assert sorted(published) == sorted(ids)  # every job, none twice
    assert repo.counts()["done"] == JOBS
    assert {job.attempts for job in repo.list_jobs()} == {1}
    assert sum(1 for result in results if result["published"]) > 1  # they really competed


@pytest.mark.parametrize("in_publish", [False, True], ids=["between-heartbeats", "inside-publish"])
def test_a_claimer_killed_with_sigkill_is_reaped_and_its_job_finished_by_another(
    tmp_path: Path, in_publish: bool
) -> None:
    url = db_url(tmp_path / "ckptd.db")
    repo = open_repo(url)
    job = enqueue_step(repo, 7)
    ready = tmp_path / "ready"
    doomed = SPAWN.Process(target=claim_and_hang, args=(url, str(ready), 30.0, in_publish), daemon=True)
    doomed.start()
    try:
        _wait_for(ready, doomed)
        old_token = int(ready.read_text())
    finally:
        os.kill(doomed.pid or 0, signal.SIGKILL)
        doomed.join(timeout=10)

    assert repo.require(job.id).state == JobState.RUNNING  # a kill mid-publish rolled back, not done
    assert repo.reap() == []  # lease still valid on the real clock
    later = open_repo(url, FakeClock(time.time() + 60.0))
    assert later.reap() == [job.id]

    report, marker = tmp_path / "report.json", str(tmp_path / "publishing")
    finisher = SPAWN.Process(
        target=claim_until_empty, args=(url, "rescuer", str(report), marker), daemon=True
    )
    finisher.start()
    finisher.join(timeout=60)
    assert json.loads(report.read_text()) == {"published": [job.id], "errors": []}
    done = repo.require(job.id)
    assert (done.state, done.attempts, done.worker_id) == (JobState.DONE, 2, "rescuer")
    assert repo.heartbeat(job.id, old_token, 5.0) is False
    with pytest.raises(LeaseLostError):
        repo.publish_and_finish(job.id, old_token, lambda: None, {})


def _wait_for(path: Path, process: multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.is_alive(), "the claimer died before claiming"
        assert time.monotonic() < deadline, "the claimer never claimed"
        time.sleep(0.02)
