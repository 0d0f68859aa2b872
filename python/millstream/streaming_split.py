"""``Dataset.streaming_split(n)``: n DataIterators fed by one execution.

A coordinator thread pulls the execution's blocks and hands each to a consumer's queue,
which holds at most ``QUEUE_BLOCKS`` blocks: a consumer that does not keep up gets no more
until it takes some, and when every queue is full the coordinator stops pulling, so the
engine's backpressure stops upstream. Memory stays bounded however slow a consumer is.

- ``equal=False``: a block goes to the consumer with room that has the fewest rows waiting,
  so a slow consumer never holds up the others (they get more of the rows).
- ``equal=True``: every block is cut into n equal slices, one per consumer, and the rows
  left over are carried into the next cut; each consumer gets exactly ``total // n`` rows
  and the last ``total % n`` rows are dropped, as in Ray. Every consumer that has begun
  must keep taking: one that stops taking (without ending its loop) holds up all; the
  share of one that has not begun yet waits for it unbounded (so one thread may iterate
  the iterators one after the other).

Each epoch (every iterator iterated once more) executes the dataset again; it starts when
all n iterators have finished the previous one (reached its end or left the loop), so
the consumers must iterate concurrently (threads), as Ray's require. A consumer that leaves
its loop early gets nothing more this epoch; its waiting blocks are dropped.
"""

from __future__ import annotations

import collections
import threading
from typing import List, Optional

import pyarrow as pa

from millstream import _args, _batch
from millstream.iterator import DataIterator, _ExecutionHandle

QUEUE_BLOCKS = 2  # blocks waiting per consumer at most


class _Coordinator:
    def __init__(self, dataset, n: int, equal: bool):
        self._dataset = dataset
        self._n = n
        self._equal = equal
        self._cv = threading.Condition()
        self._epoch = -1
        self._queues = [collections.deque() for _ in range(n)]
        self._finished = [True] * n  # consumer i is done with the current epoch
        self._started = [False] * n  # consumer i has begun the current epoch
        self._source_done = True
        self._error: Optional[BaseException] = None
        self._pump: Optional[threading.Thread] = None
        self._pump_handle = _ExecutionHandle()
        self.peak_queued = 0  # most blocks ever waiting for a consumer that has begun
        self.delivered_rows = [0] * n

    # ---- consumers ----------------------------------------------------------------

    def begin(self, i: int, epoch: int, handle: _ExecutionHandle) -> bool:
        """Consumer ``i`` starts its ``epoch``-th pass (0, 1, ...), once every consumer has
        finished the previous one; False if it left before."""
        with self._cv:
            while epoch != self._epoch:
                if handle.cancelled:
                    return False
                if epoch == self._epoch + 1 and all(self._finished):
                    self._start_epoch()
                    break
                self._cv.wait(0.05)
            self._started[i] = True
            self._cv.notify_all()
            return True

    def take(self, i: int, handle: _ExecutionHandle) -> Optional[pa.RecordBatch]:
        """Consumer ``i``'s next block; None at the end of the epoch."""
        with self._cv:
            queue = self._queues[i]
            # A timed wait: Ctrl-C reaches a consumer on the main thread between waits.
            while not queue and not self._source_done and not handle.cancelled:
                self._cv.wait(0.05)
            if queue:
                block = queue.popleft()
                self._cv.notify_all()
                return block
            if self._error is not None and not handle.cancelled:
                raise self._error
            return None

    def end(self, i: int) -> None:
        """Consumer ``i`` is done with this epoch (its end, or it left the loop)."""
        with self._cv:
            self._finished[i] = True
            self._queues[i].clear()
            self._cv.notify_all()
            stop = all(self._finished) and not self._source_done
        if stop:  # everyone left early: nothing more to execute
            self._pump_handle.cancel()

    # ---- the execution ----------------------------------------------------------------

    def _start_epoch(self) -> None:
        """Called under the lock once every consumer finished the previous epoch."""
        if self._pump is not None:
            pump, self._pump = self._pump, None
            self._cv.release()
            try:
                pump.join()
            finally:
                self._cv.acquire()
        self._epoch += 1
        self._finished = [False] * self._n
        self._started = [False] * self._n
        for queue in self._queues:
            queue.clear()
        self._source_done = False
        self._error = None
        self.delivered_rows = [0] * self._n
        self._pump_handle = _ExecutionHandle()
        self._pump = threading.Thread(target=self._run, args=(self._pump_handle,),
                                      name="millstream-split", daemon=True)
        self._pump.start()

    def _run(self, handle: _ExecutionHandle) -> None:
        blocks = self._dataset._batches(None, False, handle=handle)
        carry: List[pa.RecordBatch] = []
        try:
            for block in blocks:
                if not block.num_rows:
                    continue
                if self._equal:
                    carry.append(block)
                    pieces, carry = _cut(carry, self._n)
                    if pieces and not self._deliver_equal(pieces):
                        break
                elif not self._deliver_any(block):
                    break
            # equal: the fewer than n rows left in `carry` are dropped, as in Ray.
        except BaseException as e:  # handed to every consumer
            with self._cv:
                self._error = e
        finally:
            blocks.close()
            with self._cv:
                self._source_done = True
                self._cv.notify_all()

    def _room(self, i: int) -> bool:
        return not self._finished[i] and len(self._queues[i]) < QUEUE_BLOCKS

    def _put(self, i: int, block: pa.RecordBatch) -> None:
        self._queues[i].append(block)
        self.delivered_rows[i] += block.num_rows
        if self._started[i]:  # the bound holds for consumers taking blocks
            self.peak_queued = max(self.peak_queued, len(self._queues[i]))
        self._cv.notify_all()

    def _deliver_any(self, block: pa.RecordBatch) -> bool:
        """Gives ``block`` to the consumer with room and the fewest rows waiting; False when
        every consumer has left."""
        with self._cv:
            while True:
                if all(self._finished):
                    return False
                open_ = [i for i in range(self._n) if self._room(i)]
                if open_:
                    waiting = lambda i: sum(b.num_rows for b in self._queues[i])  # noqa: E731
                    self._put(min(open_, key=waiting), block)
                    return True
                self._cv.wait()

    def _deliver_equal(self, pieces: List[pa.RecordBatch]) -> bool:
        """Gives piece i to consumer i, waiting for its room (a consumer that left gets
        nothing); False when every consumer has left. A consumer that has not begun this
        epoch yet has its share kept without a bound: one thread iterating the iterators
        one after the other would otherwise wait for itself."""
        with self._cv:
            for i, piece in enumerate(pieces):
                while (self._started[i] and not self._finished[i]
                       and len(self._queues[i]) >= QUEUE_BLOCKS):
                    self._cv.wait()
                if not self._finished[i]:
                    self._put(i, piece)
            return not all(self._finished)

    def stats(self) -> str:
        return self._dataset.stats()


def _cut(carry: List[pa.RecordBatch], n: int):
    """n slices of equal rows from the blocks in ``carry``, and the blocks of what is left
    (fewer than n rows)."""
    rows = sum(b.num_rows for b in carry)
    each = rows // n
    if each == 0:
        return [], carry
    table = _batch.concat_batches(carry) if len(carry) > 1 else pa.Table.from_batches(carry)
    pieces = []
    for i in range(n):
        piece = table.slice(i * each, each)
        pieces.append(piece.combine_chunks().to_batches()[0] if piece.num_rows else piece)
    rest = table.slice(n * each)
    return pieces, (rest.to_batches() if rest.num_rows else [])


class _SplitIterator(DataIterator):
    """One consumer's share of a ``streaming_split``."""

    def __init__(self, coordinator: _Coordinator, index: int, n: int, dataset):
        self._coordinator = coordinator
        self._index = index
        self._n = n
        self._dataset = dataset
        self._epoch = -1

    def _blocks(self, batch_size, drop_last, handle, ordered=False):
        # A split's share depends on which consumer asks first: there is no input order
        # to keep.
        self._epoch += 1
        coordinator = self._coordinator
        try:
            joined = coordinator.begin(self._index, self._epoch, handle)
        except BaseException:  # Ctrl-C while waiting for the others
            joined = False
            raise
        finally:
            if not joined:
                self._epoch -= 1  # this pass never started: the next one is this epoch again
        if not joined:
            return
        try:
            while True:
                block = coordinator.take(self._index, handle)
                if block is None:
                    return
                yield block
        finally:
            coordinator.end(self._index)

    def _schema(self):
        return self._dataset.schema()

    def _stats(self) -> str:
        return self._coordinator.stats()

    def __repr__(self) -> str:
        return f"StreamSplitDataIterator(index={self._index}, n={self._n})"


def split(dataset, n: int, equal: bool, locality_hints) -> List[DataIterator]:
    n = _args.check_int("Dataset.streaming_split", "n", n, min=1)
    if not isinstance(equal, bool):
        raise TypeError(f"Dataset.streaming_split: equal must be a bool, got {equal!r}")
    coordinator = _Coordinator(dataset, n, equal)
    return [_SplitIterator(coordinator, i, n, dataset) for i in range(n)]
