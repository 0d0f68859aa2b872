"""DataIterator (``ds.iterator()``, ``ds.streaming_split(n)``): batches, rows and framework
tensors over one stream of blocks, with ``prefetch_batches`` formatted batches kept ready
by a background thread."""

from __future__ import annotations

import collections
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import pyarrow as pa

from millstream import _args, _batch
from millstream._args import Unsupported, public


class _ExecutionHandle:
    """The running execution behind a stream, so another thread may cancel it: the
    prefetch thread may be waiting in it for a block when the consumer walks away."""

    def __init__(self):
        self._lock = threading.Lock()
        self._it = None
        self.cancelled = False  # the consumer has left: stop waiting for blocks

    def attach(self, it) -> None:
        with self._lock:
            self._it = it

    def detach(self) -> None:
        # Under the lock: a cancel running now finishes before the execution is closed.
        with self._lock:
            self._it = None

    def cancel(self) -> None:
        self.cancelled = True
        with self._lock:
            if self._it is not None:
                self._it.cancel()


class _Prefetcher:
    """Iterates ``source`` ahead of the consumer on a background thread, keeping at most
    ``depth`` items made (formatted) and waiting. Closing the consumer's generator (the
    loop's end, a ``break``, an exception, Ctrl-C) stops the thread, cancels the execution,
    joins the thread and closes ``source`` before returning: nothing keeps running.

    When the consumer finds nothing ready and the thread is not making an item at that
    moment, the consumer makes the next one itself (``source`` is taken under a lock, so
    items keep their order): a loop faster than the source then pays no hand-over between
    threads for each batch, while a slow loop finds ``depth`` batches ready."""

    def __init__(self, source: Iterator[Any], depth: int, handle: _ExecutionHandle):
        self._source = source
        self._depth = depth
        self._handle = handle
        self._source_lock = threading.Lock()  # held while an item is being made
        self._cv = threading.Condition()
        self._ready: collections.deque = collections.deque()
        self._stop = False
        self._done = False  # the source is exhausted or failed
        self._error: Optional[BaseException] = None  # the thread's failure, raised in the loop
        self.made = 0  # items made so far
        self._thread = threading.Thread(target=self._run, name="millstream-prefetch", daemon=True)

    def _run(self) -> None:
        while True:
            with self._cv:
                while len(self._ready) >= self._depth and not self._stop and not self._done:
                    self._cv.wait()
                if self._stop or self._done:
                    return
            with self._source_lock:
                with self._cv:
                    if self._stop or self._done or len(self._ready) >= self._depth:
                        continue
                try:
                    item = next(self._source)
                except StopIteration:
                    self._finish(None)
                    return
                except BaseException as e:  # handed to the consumer, raised there
                    self._finish(e)
                    return
                with self._cv:
                    self._ready.append(item)
                    self.made += 1
                    self._cv.notify_all()

    def _finish(self, error: Optional[BaseException]) -> None:
        with self._cv:
            self._done = True
            self._error = error
            self._cv.notify_all()

    def _make_here(self):
        """(True, item) made on the consumer's thread, or (False, None) when the thread is
        making one (or one is ready) after all. StopIteration at the end."""
        if not self._source_lock.acquire(blocking=False):
            return False, None
        try:
            with self._cv:
                if self._ready or self._done:
                    return False, None
            try:
                item = next(self._source)
            except BaseException:  # StopIteration included: the end, for both threads
                self._finish(None)
                raise
            with self._cv:
                self.made += 1
            return True, item
        finally:
            self._source_lock.release()

    def __iter__(self) -> Iterator[Any]:
        # The consumer waits on a Condition (a lock acquire): Ctrl-C raised there runs this
        # generator's finally. (Raised inside queue.SimpleQueue.get, CPython 3.11 left the
        # generator suspended and its thread running.)
        self._thread.start()
        try:
            while True:
                with self._cv:
                    if self._ready:
                        item = self._ready.popleft()
                        self._cv.notify_all()
                        ready = True
                    elif self._done:
                        if self._error is not None:
                            raise self._error
                        return
                    else:
                        ready = False
                if not ready:
                    try:
                        ready, item = self._make_here()
                    except StopIteration:
                        return
                if ready:
                    yield item
                    continue
                with self._cv:
                    # A timed wait: Ctrl-C reaches the consumer between waits.
                    if not self._ready and not self._done:
                        self._cv.wait(0.05)
        finally:
            if sys.is_finalizing():
                # Collected as the interpreter exits: the daemon thread runs no more and
                # may hold a lock for ever, and the engine has been shut down (atexit).
                self._stop = True
            else:
                with self._cv:
                    self._stop = True
                    self._ready.clear()
                    self._cv.notify_all()
                self._handle.cancel()
                self._thread.join()
                with self._source_lock:
                    close = getattr(self._source, "close", None)
                    if close is not None:
                        close()  # closes the execution (its generator's finally)


def prefetched(make_source: Callable[[_ExecutionHandle], Iterator[Any]], depth: int) -> Iterator[Any]:
    """The items of ``make_source(handle)``, made ``depth`` ahead on a background thread
    (``depth`` 0: on the consumer's thread, as they are asked for)."""
    handle = _ExecutionHandle()
    if depth <= 0:
        yield from make_source(handle)
        return
    yield from _Prefetcher(make_source(handle), depth, handle)


def rebatch(blocks: Iterator[pa.RecordBatch], batch_size: Optional[int], drop_last: bool) -> Iterator[Any]:
    """``blocks`` cut into batches of ``batch_size`` rows (the last may be shorter unless
    ``drop_last``); None: the blocks as they come."""
    if batch_size is None:
        for block in blocks:
            if block.num_rows:
                yield block
        return
    pending: List[pa.RecordBatch] = []
    rows = 0
    for block in blocks:
        if not block.num_rows:
            continue
        pending.append(block)
        rows += block.num_rows
        if rows < batch_size:
            continue
        table = _batch.concat_batches(pending)
        start = 0
        while table.num_rows - start >= batch_size:
            yield table.slice(start, batch_size)
            start += batch_size
        rest = table.slice(start)
        pending = rest.to_batches() if rest.num_rows else []
        rows = rest.num_rows
    if rows and not drop_last:
        yield _batch.concat_batches(pending)


# Rows of a block converted to numpy at once by ``numpy_batches`` (a multiple of the batch
# size): the batches are then slices of those arrays. Bounded, so a batch held by the loop
# keeps at most this many rows of a block alive.
BULK_ROWS = 1 << 16


def numpy_batches(blocks: Iterator[pa.RecordBatch], batch_size: int, drop_last: bool) -> Iterator[Dict[str, Any]]:
    """``rebatch(blocks, batch_size, drop_last)`` in the numpy format, made in bulk (see
    ``numpy_batch_groups``)."""
    for group in numpy_batch_groups(blocks, batch_size, drop_last):
        yield from group


def numpy_batch_groups(blocks: Iterator[pa.RecordBatch], batch_size: int,
                       drop_last: bool) -> Iterator[List[Dict[str, Any]]]:
    """The numpy batches of ``rebatch(blocks, batch_size, drop_last)``, in lists made at
    once: the batches inside a block are slices of arrays converted for up to
    ``BULK_ROWS`` rows at once (numeric columns are views either way; a string column is
    converted in one call, repeated values sharing their objects), one list a conversion,
    and a batch that spans two blocks is concatenated in Arrow and converted on its own."""
    pending: List[pa.RecordBatch] = []
    rows = 0
    step = max(batch_size, BULK_ROWS // batch_size * batch_size)
    for block in blocks:
        n = block.num_rows
        start = 0
        if rows and n:
            start = min(batch_size - rows, n)
            pending.append(block.slice(0, start))
            rows += start
            if rows < batch_size:
                continue
            yield [_batch.to_format(_batch.concat_batches(pending), "numpy")]
            pending, rows = [], 0
        end = start + (n - start) // batch_size * batch_size
        for first in range(start, end, step):
            length = min(step, end - first)
            arrays = _batch.to_format(block.slice(first, length), "numpy")
            yield [{name: values[i:i + batch_size] for name, values in arrays.items()}
                   for i in range(0, length, batch_size)]
        if end < n:
            pending, rows = [block.slice(end)], n - end
    if rows and not drop_last:
        yield [_batch.to_format(_batch.concat_batches(pending), "numpy")]


def _flattened(groups: Iterator[List[Any]]) -> Iterator[Any]:
    """The items of the lists ``groups`` yields; closing it closes ``groups``."""
    try:
        for group in groups:
            yield from group
    finally:
        groups.close()


def _check_batching(name, prefetch_batches, batch_size, local_shuffle_buffer_size, local_shuffle_seed):
    prefetch_batches = _args.check_int(name, "prefetch_batches", prefetch_batches)
    batch_size = _args.check_int(name, "batch_size", batch_size, min=1, none_ok=True)
    _args.check_int(name, "local_shuffle_seed", local_shuffle_seed, none_ok=True)
    if local_shuffle_buffer_size is not None:
        _args.check_int(name, "local_shuffle_buffer_size", local_shuffle_buffer_size, min=1)
        if batch_size is None:
            raise ValueError("local_shuffle_buffer_size needs a batch_size")
    return prefetch_batches, batch_size


def _missing(package: str, what: str) -> ImportError:
    return ImportError(f"{what} needs the '{package}' package, which is not installed "
                       f"(pip install {package})")


class DataIterator:
    """Iterates over a stream of blocks: a Dataset's (``ds.iterator()``; each iteration
    executes it again) or one of ``ds.streaming_split(n)``'s shares of one execution.

    ``iter_batches``, ``iter_rows``, ``iter_torch_batches`` (and ``iter_tf_batches``,
    ``to_tf``, ``iter_jax_batches`` when those frameworks are installed), ``stats()``,
    ``schema()``, ``materialize()``.
    """

    @public
    def __init__(self):
        """Made by ``Dataset.iterator()`` and ``Dataset.streaming_split()``."""

    # ---- what a kind of iterator provides ----------------------------------------------

    def _blocks(self, batch_size: Optional[int], drop_last: bool,
                handle: _ExecutionHandle, ordered: bool = False) -> Iterator[pa.RecordBatch]:
        """Blocks (of ``batch_size`` rows where the source batches itself), for one pass;
        ``ordered``: in input order where the source can keep it."""
        raise NotImplementedError

    def _rebatches(self) -> bool:
        """Whether ``_blocks`` already cuts the rows into batches of ``batch_size``."""
        return False

    # ---- batches ---------------------------------------------------------------------

    def _batch_stream(self, handle, batch_size, drop_last, local_shuffle_buffer_size,
                      local_shuffle_seed) -> Iterator[Any]:
        from millstream.dataset import _shuffled_batches

        if local_shuffle_buffer_size is not None:
            # A seeded shuffle is reproducible only over blocks that arrive in one order.
            blocks = self._blocks(None, False, handle, ordered=local_shuffle_seed is not None)
            return _shuffled_batches(blocks, local_shuffle_buffer_size,
                                     batch_size, drop_last, local_shuffle_seed)
        if self._rebatches():
            return self._blocks(batch_size, drop_last, handle)
        return rebatch(self._blocks(None, False, handle), batch_size, drop_last)

    def _formatted(self, format_batch: Callable[[Any], Any], prefetch_batches: int,
                   batch_size: Optional[int], drop_last: bool, local_shuffle_buffer_size,
                   local_shuffle_seed) -> Iterator[Any]:
        """Batches passed through ``format_batch``, ``prefetch_batches`` of them made ahead
        on a background thread."""
        def source(handle):
            for batch in self._batch_stream(handle, batch_size, drop_last,
                                            local_shuffle_buffer_size, local_shuffle_seed):
                yield format_batch(batch)

        return prefetched(source, prefetch_batches)

    @public
    def iter_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                     batch_format: Optional[str] = "default", drop_last: bool = False,
                     local_shuffle_buffer_size: Optional[int] = None,
                     local_shuffle_seed: Optional[int] = None, _collate_fn=None) -> Iterator[Any]:
        """Batches of ``batch_size`` rows in ``batch_format`` ("numpy"/"default", "pandas",
        "pyarrow", None: a pyarrow Table); ``batch_size=None``: whole blocks. A background
        thread keeps ``prefetch_batches`` batches formatted ahead of the loop (0: none,
        each is made when asked for; numpy batches without a collate function are made
        a bulk conversion at a time, so at least that many are ready). ``local_shuffle_buffer_size=n`` shuffles rows within
        a buffer of at least n rows (seeded by ``local_shuffle_seed``)."""
        fmt = _batch.check_batch_format(batch_format)
        prefetch_batches, batch_size = _check_batching(
            "DataIterator.iter_batches", prefetch_batches, batch_size, local_shuffle_buffer_size,
            local_shuffle_seed)
        if fmt == "numpy" and batch_size is not None and local_shuffle_buffer_size is None:
            if _collate_fn is None:
                # Slices cost next to nothing: the thread keeps whole conversions (lists
                # of batches) ready, and hands over once a list, not once a batch.
                return _flattened(prefetched(
                    lambda handle: numpy_batch_groups(self._blocks(None, False, handle),
                                                      batch_size, drop_last),
                    prefetch_batches))

            def numpy_source(handle):
                for out in numpy_batches(self._blocks(None, False, handle), batch_size, drop_last):
                    yield _collate_fn(out) if _collate_fn is not None else out

            return prefetched(numpy_source, prefetch_batches)

        def format_batch(batch):
            out = _batch.to_format(batch, fmt)
            return _collate_fn(out) if _collate_fn is not None else out

        return self._formatted(format_batch, prefetch_batches, batch_size, drop_last,
                               local_shuffle_buffer_size, local_shuffle_seed)

    @public
    def iter_rows(self) -> Iterator[Dict[str, Any]]:
        """The rows as dicts."""
        for batch in prefetched(lambda handle: self._blocks(None, False, handle), 1):
            yield from _batch.rows_of(batch)

    @public
    def iter_torch_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                           dtypes=None, device="auto", collate_fn=None, drop_last: bool = False,
                           local_shuffle_buffer_size: Optional[int] = None,
                           local_shuffle_seed: Optional[int] = None,
                           pin_memory: bool = False) -> Iterator[Any]:
        """Batches as dicts of ``torch.Tensor`` (one per column).

        Numeric columns without nulls become tensors over the Arrow buffers, without a
        copy (through DLPack: no warning about read-only arrays); fixed-shape tensor
        columns become tensors of shape ``(rows, *shape)``; variable-shape tensor columns
        a list of tensors. ``dtypes``: one ``torch.dtype`` or a dict column -> dtype.
        ``device``: "auto" (the CPU here: no training session places it), "cpu",
        "cuda", "cuda:1", a ``torch.device`` or an index; on a CUDA device the batch is
        pinned and copied without blocking. ``pin_memory=True`` pins CPU batches too
        (needs CUDA). ``collate_fn`` gets the numpy batch (a dict of ndarrays) and
        returns what the loop gets; tensors it returns are moved to ``device``. A
        background thread keeps ``prefetch_batches`` batches converted ahead.
        """
        from millstream import torch_ingest

        torch_ingest.require_torch("iter_torch_batches")
        prefetch_batches, batch_size = _check_batching(
            "DataIterator.iter_torch_batches", prefetch_batches, batch_size,
            local_shuffle_buffer_size, local_shuffle_seed)
        convert = torch_ingest.converter(dtypes, device, collate_fn, pin_memory)
        return self._formatted(convert, prefetch_batches, batch_size, drop_last,
                               local_shuffle_buffer_size, local_shuffle_seed)

    @public
    def iter_tf_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                        dtypes=None, drop_last: bool = False,
                        local_shuffle_buffer_size: Optional[int] = None,
                        local_shuffle_seed: Optional[int] = None) -> Iterator[Any]:
        """Batches as dicts of ``tf.Tensor`` (needs TensorFlow; ImportError naming it if
        missing). ``dtypes``: one ``tf.DType`` or a dict column -> dtype."""
        try:
            import tensorflow as tf
        except ImportError:
            raise _missing("tensorflow", "iter_tf_batches") from None

        def convert(batch):
            out = {}
            for name, values in _batch.to_format(batch, "numpy").items():
                dtype = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
                out[name] = tf.convert_to_tensor(values, dtype=dtype)
            return out

        prefetch_batches, batch_size = _check_batching(
            "DataIterator.iter_tf_batches", prefetch_batches, batch_size,
            local_shuffle_buffer_size, local_shuffle_seed)
        return self._formatted(convert, prefetch_batches, batch_size, drop_last,
                               local_shuffle_buffer_size, local_shuffle_seed)

    @public(unsupported={
        "feature_type_spec": Unsupported(None, why="the type specs are taken from the schema"),
        "label_type_spec": Unsupported(None, why="the type specs are taken from the schema"),
        "additional_type_spec": Unsupported(None, why="the type specs are taken from the schema"),
    })
    def to_tf(self, feature_columns, label_columns, *, additional_columns=None,
              prefetch_batches: int = 1, batch_size: int = 1, drop_last: bool = False,
              local_shuffle_buffer_size: Optional[int] = None,
              local_shuffle_seed: Optional[int] = None, feature_type_spec=None,
              label_type_spec=None, additional_type_spec=None):
        """A ``tf.data.Dataset`` of (features, labels) batches (needs TensorFlow;
        ImportError naming it if missing). A column name gives a tensor, a list of names
        a dict of tensors."""
        try:
            import tensorflow as tf
        except ImportError:
            raise _missing("tensorflow", "to_tf") from None

        def pick(batch, columns):
            if columns is None:
                return None
            if isinstance(columns, str):
                return tf.convert_to_tensor(batch[columns])
            return {c: tf.convert_to_tensor(batch[c]) for c in columns}

        def generate():
            for batch in self.iter_batches(prefetch_batches=prefetch_batches, batch_size=batch_size,
                                           drop_last=drop_last,
                                           local_shuffle_buffer_size=local_shuffle_buffer_size,
                                           local_shuffle_seed=local_shuffle_seed):
                parts = [pick(batch, feature_columns), pick(batch, label_columns)]
                if additional_columns is not None:
                    parts.append(pick(batch, additional_columns))
                yield tuple(parts)

        first = next(iter(generate()))
        signature = tf.nest.map_structure(
            lambda t: tf.TensorSpec(shape=(None,) + tuple(t.shape[1:]), dtype=t.dtype), first)
        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    @public
    def iter_jax_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                         dtypes=None, drop_last: bool = False,
                         local_shuffle_buffer_size: Optional[int] = None,
                         local_shuffle_seed: Optional[int] = None) -> Iterator[Any]:
        """Batches as dicts of ``jax.Array`` (needs JAX; ImportError naming it if
        missing). ``dtypes``: one dtype or a dict column -> dtype."""
        try:
            import jax.numpy as jnp
        except ImportError:
            raise _missing("jax", "iter_jax_batches") from None

        def convert(batch):
            out = {}
            for name, values in _batch.to_format(batch, "numpy").items():
                dtype = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
                out[name] = jnp.asarray(values, dtype=dtype)
            return out

        prefetch_batches, batch_size = _check_batching(
            "DataIterator.iter_jax_batches", prefetch_batches, batch_size,
            local_shuffle_buffer_size, local_shuffle_seed)
        return self._formatted(convert, prefetch_batches, batch_size, drop_last,
                               local_shuffle_buffer_size, local_shuffle_seed)

    # ---- whole stream ----------------------------------------------------------------

    @public
    def materialize(self):
        """Consumes one pass and keeps its rows in memory as a MaterializedDataset."""
        return self._materialize()

    def _materialize(self):
        from millstream import _core
        from millstream.dataset import MaterializedDataset

        blocks = list(self._blocks(None, False, _ExecutionHandle()))
        schema = self._schema()
        table = _batch.concat_batches(blocks, None if schema is None else schema.base_schema)
        return MaterializedDataset(_core.Dataset.from_arrow(table, None))

    @public
    def schema(self):
        """The schema of the rows (a ``millstream.Schema``), or None when unknown."""
        return self._schema()

    def _schema(self):
        return None

    @public
    def stats(self) -> str:
        """Counters of the last execution behind this iterator."""
        return self._stats()

    def _stats(self) -> str:
        return ""

    @public
    def get_context(self):
        """The DataContext the iterations run under."""
        from millstream.context import DataContext

        return DataContext.get_current()


class _DatasetIterator(DataIterator):
    """``ds.iterator()``: every pass executes the dataset again."""

    def __init__(self, dataset):
        self._dataset = dataset

    def _rebatches(self) -> bool:
        return True

    def _blocks(self, batch_size, drop_last, handle, ordered=False):
        return self._dataset._batches(batch_size, drop_last, ordered=ordered, handle=handle)

    def _schema(self):
        return self._dataset.schema()

    def _stats(self) -> str:
        return self._dataset.stats()

    def _materialize(self):
        return self._dataset.materialize()

    def __repr__(self) -> str:
        return f"DataIterator({self._dataset!r})"

