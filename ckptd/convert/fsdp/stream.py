"""Stream a shard to disk batch by batch instead of assembling it in memory first.

The shard plan fixes every tensor's name, shape and dtype, so the safetensors header (and every data
offset) is known before any tensor is read. Tensors are then written as their batch arrives, hashed
on the way, while a background thread reads the next batch: memory stays at about two source
batches whatever the shard size, and reading overlaps writing. Records, progress file, resume and
index are the shared :class:`ShardedWriter`'s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch

from ckptd.convert import safetensors_stream
from ckptd.convert.writer import ShardedWriter, ShardPlan, ShardRecord, TensorSpec
from ckptd.errors import ConversionError

_DONE = object()
_T = TypeVar("_T")


def header_bytes(specs: Sequence[TensorSpec]) -> bytes:
    """The safetensors header for ``specs`` laid out in order, with ``{"format": "pt"}`` metadata."""
    return safetensors_stream.header_bytes(((s.name, s.shape, s.dtype) for s in specs), {"format": "pt"})


def tensor_bytes(spec: TensorSpec, tensor: torch.Tensor) -> memoryview:
    if tuple(tensor.shape) != spec.shape:
        raise ConversionError(f"{spec.name}: shape {tuple(tensor.shape)} differs from planned {spec.shape}")
    return safetensors_stream.tensor_bytes(tensor.to(spec.dtype).contiguous())


def prefetch(batches: Iterator[_T]) -> Iterator[_T]:
    """Produce the next batch in a thread while the caller writes the current one (one ahead)."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def run() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                slots.put(batch)
            slots.put(_DONE)
        except BaseException as exc:  # re-raised in the consumer
            slots.put(exc)

    worker = threading.Thread(target=run, name="ckptd-prefetch", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                continue


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _release_freed_heap() -> None:
    """Give freed batch memory back to the OS. Batches are allocated in the prefetch thread's arena
    and freed here; glibc raises its mmap threshold after large frees, so without a trim the freed
    heap stays resident and RSS creeps up with the number of batches (i.e. with model size)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class StreamingShardWriter(ShardedWriter):
    def write_stream(
        self,
        shard: ShardPlan,
        batches: Iterable[Mapping[str, torch.Tensor]],
        on_bytes: Callable[[int], None] | None = None,
    ) -> ShardRecord:
        """Write ``shard`` from batches that arrive in plan order (each tensor exactly once);
        ``on_bytes(n)`` after each batch with its tensor bytes, in the calling thread (progress)."""
        specs = list(shard.tensors)
        temp = self.temp_path(shard)
        digest = hashlib.sha256()
        written = flushed = batch_bytes = 0
        with temp.open("wb") as handle:
            head = header_bytes(specs)
            handle.write(head)
            digest.update(head)
            for batch in batches:
                for name, tensor in batch.items():
                    if written >= len(specs) or specs[written].name != name:
                        raise ConversionError(f"{shard.filename}: {name} arrived out of plan order")
                    data = tensor_bytes(specs[written], tensor)
                    handle.write(data)
                    digest.update(data)
                    batch_bytes += specs[written].nbytes
                    written += 1
                flushed = safetensors_stream.start_writeback(handle, flushed)
                if on_bytes is not None:
                    on_bytes(batch_bytes)
                batch_bytes = 0
                del batch  # drop the last reference before trimming
                _release_freed_heap()
            if written != len(specs):
                raise ConversionError(f"{shard.filename}: {specs[written].name} never arrived")
            handle.flush()
            os.fsync(handle.fileno())
        return self.commit(shard, temp, digest.hexdigest())

    def write_all_streaming(
        self,
        produce: Callable[[ShardPlan], Iterator[Mapping[str, torch.Tensor]]],
        on_shard: Callable[[ShardRecord], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Write every pending shard in order; reading runs one batch ahead, across shard ends too."""
        pending = self.pending()

        def tagged() -> Iterator[tuple[str, Mapping[str, torch.Tensor] | None]]:
            for shard in pending:
                for batch in produce(shard):
                    yield shard.filename, batch
                yield shard.filename, None  # end of this shard

        stream = prefetch(tagged())
        for shard in pending:
            record = self.write_stream(shard, _until_end(stream), on_bytes)
            if on_shard is not None:
                on_shard(record)


def _until_end(
    stream: Iterator[tuple[str, Mapping[str, torch.Tensor] | None]],
) -> Iterator[Mapping[str, torch.Tensor]]:
    for _, batch in stream:
        if batch is None:
            return
        yield batch
