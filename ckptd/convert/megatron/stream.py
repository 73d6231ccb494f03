"""Writing planned shards with a bounded thread pool and a bounded memory footprint."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager

import torch

from ckptd.convert.writer import ShardedWriter, ShardPlan, ShardRecord

# A shard in flight costs about this many times its size: the merged tensors (the writer streams
# them to disk without a copy) and the source pages of the item being merged.
SHARD_MEMORY_FACTOR = 2


class MemoryGate:
    """Admits work while its estimated footprint fits the budget; an oversized piece runs alone."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, need: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._used == 0 or self._used + need <= self.budget)
            self._used += need
        try:
            yield
        finally:
            with self._cond:
                self._used -= need
                self._cond.notify_all()


def write_shards(
    writer: ShardedWriter,
    produce: Callable[[ShardPlan], Mapping[str, torch.Tensor]],
    *,
    threads: int,
    memory_budget: int,
    on_shard: Callable[[ShardRecord], None],
) -> None:
    """Write every pending shard; the first failure cancels the shards not started yet."""
    gate = MemoryGate(memory_budget)

    def one(shard: ShardPlan) -> None:
        with gate.hold(shard.nbytes * SHARD_MEMORY_FACTOR):
            record = writer.write(shard, produce(shard))
        on_shard(record)

    pending: Sequence[ShardPlan] = writer.pending()
    if threads <= 1:
        for shard in pending:
            one(shard)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ckptd-mg") as pool:
        futures = [pool.submit(one, shard) for shard in pending]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            failed[0].result()
