"""The memory gate that bounds shards in flight (real threads)."""

from __future__ import annotations

import threading
import time

from ckptd.convert.megatron.stream import MemoryGate


def _peak_in_flight(gate: MemoryGate, needs: list[int]) -> int:
    lock = threading.Lock()
    current = [0, 0]

    def work(need: int) -> None:
        with gate.hold(need):
            with lock:
                current[0] += need
                current[1] = max(current[1], current[0])
            time.sleep(0.02)
            with lock:
                current[0] -= need

    workers = [threading.Thread(target=work, args=(need,)) for need in needs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    return current[1]


def test_work_in_flight_stays_within_the_budget() -> None:
    assert _peak_in_flight(MemoryGate(100), [40, 40, 40, 40]) == 80


def test_oversized_work_runs_alone_instead_of_deadlocking() -> None:
    assert _peak_in_flight(MemoryGate(100), [250, 30, 30]) in (250, 60)
    assert _peak_in_flight(MemoryGate(100), [250, 250]) == 250
