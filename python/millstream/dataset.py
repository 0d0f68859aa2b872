"""The Dataset API: lazy, immutable, Ray Data's names and parameters."""

from __future__ import annotations

import builtins
import collections.abc
import inspect
import os
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from millstream import _args, _auto_workers, _batch, _core, _files, _workers, ray_backend
from millstream._args import Unsupported, public
from millstream._expr import serialize, to_expression
from millstream.compute import ActorPoolStrategy, TaskPoolStrategy
from millstream.context import DataContext, _cpu_count
from millstream.iterator import DataIterator, _DatasetIterator
from millstream.progress import ProgressReporter


# Ray parameters this engine does not implement (see _args.public).
_DYNAMIC_REMOTE_ARGS = Unsupported(None, why="per-task remote args: tasks here take num_cpus/num_gpus/memory")
_NOT_A_TASK = "this step runs inside the engine's operators, not as a task of its own"
_NO_TASK_ARGS = {"compute": Unsupported(None, why=_NOT_A_TASK), "concurrency": Unsupported(None, why=_NOT_A_TASK)}
_NOT_YET = "not implemented yet"
_WRITE_UNSUPPORTED = {
    "try_create_dir": Unsupported(True, why="the directory is always created"),
    "ray_remote_args": _args.RAY_REMOTE_ARGS_NO_TASK.rule(),
}


class RandomSeedConfig:
    """How a random operator (``random_shuffle``, ``randomize_block_order``) is seeded, as in
    Ray: ``seed=None``, a different order every run; a seed with
    ``reseed_after_execution=True`` (the default), a different but reproducible order on
    each execution of the dataset; with ``False``, the same order every time.
    ``use_timestamp_as_default=True`` with no seed takes the creation time as the seed."""

    def __init__(self, seed: Optional[int] = None, reseed_after_execution: bool = True,
                 use_timestamp_as_default: bool = False):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"RandomSeedConfig: seed must be an int or None, got {seed!r}")
        self.reseed_after_execution = bool(reseed_after_execution)
        self.use_timestamp_as_default = bool(use_timestamp_as_default)
        if seed is None and self.use_timestamp_as_default:
            # Ray's legacy default: the creation time becomes the base seed, so the
            # executions of one dataset follow it (reproducibly) instead of being random.
            seed = time.time_ns()
        self.seed = None if seed is None else int(seed)

    def __repr__(self) -> str:
        return f"RandomSeedConfig(seed={self.seed}, reseed_after_execution={self.reseed_after_execution})"


def _seed(where: str, seed) -> Tuple[Optional[int], bool]:
    """(seed as an unsigned 64-bit int or None, reseed per execution) from an int or a RandomSeedConfig."""
    if isinstance(seed, RandomSeedConfig):
        base, reseed = seed.seed, seed.reseed_after_execution
    elif seed is None:
        return None, False
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{where}: seed must be an int, a RandomSeedConfig or None, got {seed!r}")
    else:
        base, reseed = int(seed), False
    if base is None:
        return None, False
    return base & 0xFFFFFFFFFFFFFFFF, reseed


def _validate_join_schemas(left, right, on: List[str], right_on: List[str]) -> None:
    """Dataset.join(validate_schemas=True): keys present on their side, as many right keys
    as left keys, and key types equal (ValueError naming the column)."""
    if not on:
        raise ValueError("At least 1 column name to join on has to be provided (got [])")
    if len(on) != len(right_on):
        raise ValueError(f"Number of columns provided for left and right datasets has to match "
                         f"(got {on} and {right_on})")
    for lk, rk in zip(on, right_on):
        lt = rt = None
        if left is not None:
            if lk not in left.names:
                raise ValueError(f"Dataset.join: the left key column {lk!r} is not in the left dataset; "
                                 f"its columns are {left.names}")
            lt = left.base_schema.field(lk).type
        if right is not None:
            if rk not in right.names:
                raise ValueError(f"Dataset.join: the right key column {rk!r} is not in the right dataset; "
                                 f"its columns are {right.names}")
            rt = right.base_schema.field(rk).type
        if lt is not None and rt is not None:
            lt = lt.value_type if pa.types.is_dictionary(lt) else lt
            rt = rt.value_type if pa.types.is_dictionary(rt) else rt
            if lt != rt:
                raise ValueError(f"Dataset.join: key column {lk!r} is {lt} on the left but {rk!r} is {rt} "
                                 f"on the right; key columns must have the same types on both sides")


def _fn_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "<lambda>" if name == "<lambda>" else name


def _compute(fn: Any, concurrency, compute) -> Tuple[bool, int, int]:
    """(actors?, min, max) from Ray's `concurrency` (int or (min, max[, initial])) or its
    `compute` strategy."""
    is_class = inspect.isclass(fn)
    if isinstance(compute, str):
        if compute not in ("tasks", "actors"):
            raise ValueError(f"compute must be 'tasks', 'actors', a TaskPoolStrategy or an ActorPoolStrategy, got {compute!r}")
        compute = ActorPoolStrategy() if compute == "actors" else TaskPoolStrategy()
    initial = compute.initial_size if isinstance(compute, ActorPoolStrategy) else (
        concurrency[2] if isinstance(concurrency, tuple) and len(concurrency) == 3 else None)
    if initial is not None and initial != (compute.min_size if isinstance(compute, ActorPoolStrategy) else concurrency[0]):
        raise NotImplementedError(f"an actor pool starts with its minimum size; initial size {initial} is not supported")
    if isinstance(compute, ActorPoolStrategy):
        if not is_class:
            raise ValueError("ActorPoolStrategy runs a callable class; got a function (use TaskPoolStrategy)")
        return True, compute.min_size, compute.max_size or max(compute.min_size, _cpu_count())
    if isinstance(compute, TaskPoolStrategy):
        if is_class:
            raise ValueError("a callable class runs on actors: use ActorPoolStrategy or concurrency=")
        return False, 0, compute.size or 0
    if isinstance(concurrency, tuple):
        concurrency = tuple(_args.check_int(_fn_name(fn), "concurrency", c, min=1) for c in concurrency)
        if len(concurrency) not in (2, 3) or concurrency[1] < concurrency[0]:
            raise ValueError(f"concurrency must be n, (min, max) or (min, max, initial) with 1 <= min <= max; got {concurrency}")
        lo, hi = concurrency[0], concurrency[1]
    elif concurrency is None:
        lo, hi = (1, _cpu_count()) if is_class else (0, 0)
    else:
        lo = hi = _args.check_int(_fn_name(fn), "concurrency", concurrency, min=1)
    if not is_class and isinstance(concurrency, tuple):
        raise ValueError("a (min, max) concurrency makes an autoscaling actor pool; it needs a callable class, not a function")
    return is_class, (lo if is_class else 0), hi


class _Execution:
    """A running execution (the engine's iterator), counted as running for the UDF worker
    processes (``millstream._workers``) until it is closed or dropped."""

    def __init__(self, core, context: "_core.DataContext", batch_size, drop_last, keep_empty=False):
        self._ended = True
        _workers.execution_started()
        try:
            self._it = core.execute(context, batch_size, drop_last, keep_empty)
        except BaseException:
            _workers.execution_ended()
            raise
        self._ended = False
        self.next = self._it.next  # the per-batch call, without a lookup through __getattr__

    def __getattr__(self, name):
        return getattr(self._it, name)

    def close(self) -> None:
        try:
            self._it.close()
        finally:
            if not self._ended:
                self._ended = True
                _workers.execution_ended()  # the last one running stops the UDF workers

    def __del__(self) -> None:
        if not getattr(self, "_ended", True):
            self.close()


def _start(core, context: "_core.DataContext", batch_size, drop_last, keep_empty=False) -> _Execution:
    """Starts an execution of the plan ``core``; closing it (Dataset._finish) ends it.
    ``keep_empty``: empty blocks are handed on too (whole blocks only)."""
    return _Execution(core, context, batch_size, drop_last, keep_empty)


class Schema:
    """The schema of a Dataset: column names and types (``base_schema`` is the pyarrow one)."""

    def __init__(self, schema: pa.Schema):
        self.base_schema = schema

    @property
    def names(self) -> List[str]:
        return list(self.base_schema.names)

    @property
    def types(self) -> List[pa.DataType]:
        return list(self.base_schema.types)

    def __eq__(self, other) -> bool:
        return isinstance(other, Schema) and other.base_schema == self.base_schema

    def __repr__(self) -> str:
        width = max([len("Column")] + [len(n) for n in self.names])
        lines = [f"{'Column':<{width}}  Type", f"{'------':<{width}}  ----"]
        lines += [f"{n:<{width}}  {t}" for n, t in zip(self.names, self.types)]
        return "\n".join(lines)


class Dataset:
    """A lazy, immutable dataset of Arrow blocks.

    Transforms (``map_batches``, ``filter``...) return a new Dataset and run nothing; a
    consuming call (``iter_batches``, ``take``, ``write_parquet``...) executes the plan as
    a stream under the memory budget of ``DataContext.get_current()``.
    """

    _auto_udfs: tuple = ()  # the "auto" UDFs in its plan (millstream._auto_workers)

    def __init__(self, core: "_core.Dataset"):
        self._core = core
        self._last_stats: Optional["_core.ExecutionStats"] = None  # the last execution's counters

    # ---- transforms -----------------------------------------------------------------

    def _map(self, adapter_for: Callable[[Any], Callable], fn: Any, name: str, *, batch_size=None,
             row_preserving=False, compute=None, concurrency=None, fn_constructor_args=None,
             fn_constructor_kwargs=None, num_cpus=None, num_gpus=None, memory=None,
             **ray_remote_args) -> "Dataset":
        if not callable(fn):
            raise TypeError(f"{name}: fn must be a function or a callable class, got {type(fn).__name__}")
        is_class, lo, hi = _compute(fn, concurrency, compute)
        if isinstance(batch_size, str) and batch_size == "auto":
            batch_size = None
        batch_size = _args.check_int(name, "batch_size", batch_size, min=1, none_ok=True)
        workers = _workers.mode()
        auto = ()  # the AutoUdf made here, for stats() and explain()
        if is_class:
            args = tuple(fn_constructor_args or ())
            kwargs = dict(fn_constructor_kwargs or {})

            def make_instance(cls=fn):
                instance = cls(*args, **kwargs)
                return adapter_for(instance)

            target = make_instance
        else:
            if fn_constructor_args or fn_constructor_kwargs:
                raise ValueError(f"{name}: fn_constructor_args apply only to callable classes")
            target = None if workers == "processes" else adapter_for(fn)
        cpus = _args.check_number(name, "num_cpus", 1.0 if num_cpus is None else num_cpus)
        gpus = _args.check_number(name, "num_gpus", 0.0 if num_gpus is None else num_gpus)
        if workers == "processes":
            # The operator's name says where it runs (explain(), stats(), errors).
            name = f"{name}[processes]"
            target = _workers.wrap(target if is_class else (lambda: adapter_for(fn)), is_class, name,
                                   gpus, ray_remote_args)
        elif workers == "auto" and not is_class:  # a callable class stays on threads
            name = f"{name}[auto]"
            target = _auto_workers.AutoUdf(target, lambda: adapter_for(fn), name, ray_remote_args)
            auto = (target,)
        mem = int(_args.check_number(name, "memory", 0 if memory is None else memory))
        in_flight = getattr(compute, "max_tasks_in_flight_per_actor", None)
        if in_flight is None:
            in_flight = DataContext.get_current().max_tasks_in_flight_per_actor
        in_flight = _args.check_int(name, "max_tasks_in_flight_per_actor", 4 if in_flight is None else in_flight, min=1)
        max_concurrency = _args.check_int(name, "max_concurrency", ray_remote_args.get("max_concurrency"),
                                          min=1, none_ok=True)
        if max_concurrency is not None and not is_class:
            raise ValueError(f"{name}: max_concurrency applies to an actor pool (a callable class); "
                             "a function runs as tasks, capped by concurrency=")
        threaded = bool(getattr(compute, "enable_true_multi_threading", False))
        out = Dataset(self._core.map_batches(target, is_class, name, batch_size, row_preserving,
                                             is_class, lo, hi, cpus, gpus, in_flight, mem,
                                             max_concurrency or 1, threaded))
        out._auto_udfs = self._auto_udfs + auto
        return out

    @public(passthrough=_args.RAY_REMOTE_ARGS, unsupported={"ray_remote_args_fn": _DYNAMIC_REMOTE_ARGS})
    def map_batches(self, fn, *, batch_size: Union[int, None, str] = None, compute=None,
                    batch_format: Optional[str] = "default", zero_copy_batch: bool = True,
                    fn_args=None, fn_kwargs=None, fn_constructor_args=None,
                    fn_constructor_kwargs=None, num_cpus=None, num_gpus=None, memory=None,
                    concurrency=None, udf_modifying_row_count: bool = True,
                    ray_remote_args_fn=None, **ray_remote_args) -> "Dataset":
        """Applies ``fn`` to batches of ``batch_size`` rows (whole blocks if None).

        ``fn`` takes and returns a batch in ``batch_format``: "numpy" (the default; a dict
        of arrays, read-only views of Arrow memory when ``zero_copy_batch``), "pandas",
        "pyarrow", or None (the native block, a pyarrow Table). A callable class runs on an
        actor pool (``concurrency=n`` or ``(min, max)``), constructed once per actor with
        ``fn_constructor_args/kwargs``; an actor runs one call at a time
        (``max_concurrency=k`` in ``ray_remote_args``: k tasks at once, their calls still one
        at a time unless the ``ActorPoolStrategy`` has ``enable_true_multi_threading=True``).
        ``fn`` may be a generator or ``async def`` (its coroutine or async generator runs on
        the UDF's own event loop). With ``DataContext.python_udf_workers = "processes"``
        (set before this call) ``fn`` runs in worker processes, a callable class one
        process per actor; ``max_retries`` / ``max_restarts`` / ``max_task_retries`` then
        say how often a call whose worker died is tried again (see the README). With
        ``"auto"`` a function ``fn`` starts on threads and moves to processes if its calls
        are measured to be held back by the GIL.
        """
        fmt = _batch.check_batch_format(batch_format)
        name = f"MapBatches({_fn_name(fn)})"
        args, kwargs = tuple(fn_args or ()), dict(fn_kwargs or {})
        adapter = lambda f: _batch.batch_adapter(f, fmt, name, not zero_copy_batch, args, kwargs)
        return self._map(adapter, fn, name, batch_size=batch_size, compute=compute,
                         concurrency=concurrency, fn_constructor_args=fn_constructor_args,
                         fn_constructor_kwargs=fn_constructor_kwargs, num_cpus=num_cpus,
                         num_gpus=num_gpus, memory=memory, row_preserving=not udf_modifying_row_count,
                         **ray_remote_args)

    @public(passthrough=_args.RAY_REMOTE_ARGS, unsupported={"ray_remote_args_fn": _DYNAMIC_REMOTE_ARGS})
    def map(self, fn, *, compute=None, fn_args=None, fn_kwargs=None, fn_constructor_args=None,
            fn_constructor_kwargs=None, num_cpus=None, num_gpus=None, memory=None,
            concurrency=None, ray_remote_args_fn=None, **ray_remote_args) -> "Dataset":
        """Applies ``fn`` to each row (a dict), which returns one row (a dict). It runs in
        worker processes with ``DataContext.python_udf_workers = "processes"`` (or
        ``"auto"``), as ``map_batches``."""
        name = f"Map({_fn_name(fn)})"
        args, kwargs = tuple(fn_args or ()), dict(fn_kwargs or {})

        def adapter(f):
            runner = _batch.AsyncRunner()

            def call(batch: pa.RecordBatch) -> pa.Table:
                rows = []
                for row in _batch.rows_of(batch):
                    out = f(row, *args, **kwargs)
                    if type(out) is dict:  # the common case, without the async checks
                        rows.append(out)
                        continue
                    # An async generator's rows count as the row's outputs (as in Ray).
                    out, many = runner.resolve(out)
                    if many:
                        rows.extend(out)
                    else:
                        rows.append(out)
                return _batch.table_from_rows(rows, None, name, like=batch.schema)
            return call

        return self._map(adapter, fn, name, row_preserving=True, compute=compute,
                         concurrency=concurrency, fn_constructor_args=fn_constructor_args,
                         fn_constructor_kwargs=fn_constructor_kwargs, num_cpus=num_cpus, num_gpus=num_gpus,
                         memory=memory, **ray_remote_args)

    @public(passthrough=_args.RAY_REMOTE_ARGS, unsupported={"ray_remote_args_fn": _DYNAMIC_REMOTE_ARGS})
    def flat_map(self, fn, *, compute=None, fn_args=None, fn_kwargs=None, fn_constructor_args=None,
                 fn_constructor_kwargs=None, num_cpus=None, num_gpus=None, memory=None,
                 concurrency=None, ray_remote_args_fn=None, **ray_remote_args) -> "Dataset":
        """Applies ``fn`` to each row; it returns a list of rows (dicts), possibly empty."""
        name = f"FlatMap({_fn_name(fn)})"
        args, kwargs = tuple(fn_args or ()), dict(fn_kwargs or {})

        def adapter(f):
            runner = _batch.AsyncRunner()

            def call(batch: pa.RecordBatch) -> pa.Table:
                rows = []
                for row in _batch.rows_of(batch):
                    out = f(row, *args, **kwargs)
                    if type(out) not in (list, dict):
                        out, _ = runner.resolve(out)
                    rows.extend([out] if isinstance(out, dict) else list(out))
                return _batch.table_from_rows(rows, None, name, like=batch.schema)
            return call

        return self._map(adapter, fn, name, compute=compute, concurrency=concurrency,
                         fn_constructor_args=fn_constructor_args,
                         fn_constructor_kwargs=fn_constructor_kwargs, num_cpus=num_cpus, num_gpus=num_gpus,
                         memory=memory, **ray_remote_args)

    @public(passthrough=_args.RAY_REMOTE_ARGS, unsupported={"ray_remote_args_fn": _DYNAMIC_REMOTE_ARGS})
    def filter(self, fn=None, expr=None, *, compute=None, fn_args=None, fn_kwargs=None,
               fn_constructor_args=None, fn_constructor_kwargs=None, num_cpus=None,
               num_gpus=None, memory=None, concurrency=None, ray_remote_args_fn=None,
               **ray_remote_args) -> "Dataset":
        """Keeps rows for which ``fn(row)`` is true, or where ``expr`` holds.

        ``expr`` is a string (``"qty > 10 and cat == 'a'"``) or a
        ``pyarrow.compute.Expression``; it runs vectorised in the engine, without Python.
        """
        if (fn is None) == (expr is None):
            raise ValueError("Exactly one of 'fn' or 'expr' must be provided.")
        _args.check_expr_filter(expr, locals())
        if expr is None and not callable(fn):
            raise ValueError(f"fn must be a UserDefinedFunction, but got {type(fn).__name__} instead.")
        if expr is not None:
            return Dataset(self._core.filter_expr(serialize(to_expression(expr))))
        name = f"Filter({_fn_name(fn)})"
        args, kwargs = tuple(fn_args or ()), dict(fn_kwargs or {})

        def adapter(f):
            runner = _batch.AsyncRunner()

            def call(batch: pa.RecordBatch) -> pa.RecordBatch:
                mask = [f(row, *args, **kwargs) for row in _batch.rows_of(batch)]
                if not all(type(keep) is bool for keep in mask):  # async results, numpy bools...
                    mask = [bool(runner.resolve(keep)[0]) for keep in mask]
                return batch.filter(pa.array(mask, type=pa.bool_()))
            return call

        return self._map(adapter, fn, name, compute=compute, concurrency=concurrency,
                         fn_constructor_args=fn_constructor_args,
                         fn_constructor_kwargs=fn_constructor_kwargs, num_cpus=num_cpus, num_gpus=num_gpus,
                         memory=memory, **ray_remote_args)

    @public(passthrough=_args.RAY_REMOTE_ARGS)
    def add_column(self, col: str, fn: Callable, *, batch_format: Optional[str] = "pandas",
                   compute=None, concurrency=None, **ray_remote_args) -> "Dataset":
        """Adds (or replaces) column ``col`` with ``fn(batch)``, computed per batch."""
        if not isinstance(col, str):
            raise TypeError(f"Dataset.add_column: col must be a column name (a string), got {col!r}")
        fmt = _batch.check_batch_format(batch_format)
        name = f"AddColumn({col})"

        def adapter(f):
            def call(batch: pa.RecordBatch) -> pa.Table:
                values = f(_batch.to_format(batch, fmt))
                if hasattr(values, "to_numpy") and not isinstance(values, (pa.Array, pa.ChunkedArray)):
                    values = values.to_numpy()
                column = _batch._array_from_numpy(values)
                table = pa.Table.from_batches([batch])
                if col in table.column_names:
                    return table.set_column(table.column_names.index(col), col, column)
                return table.append_column(col, column)
            return call

        return self._map(adapter, fn, name, row_preserving=True, compute=compute, concurrency=concurrency,
                         **ray_remote_args)

    @public(passthrough=_args.RAY_REMOTE_ARGS_NO_TASK)
    def with_column(self, column_name: str, expr, **ray_remote_args) -> "Dataset":
        """Adds (or replaces) column ``column_name`` with the values of ``expr``, a
        ``millstream.expressions`` expression (``col("a") * 2``, ``col("s").str.upper()``)
        or a ``pyarrow.compute.Expression``, evaluated natively on the engine's threads (no
        Python, no GIL). A literal fills every row. A column it names that the data lacks
        raises ``KeyError`` naming it."""
        from millstream.expressions import Expr, StarExpr

        if not isinstance(column_name, str):
            raise TypeError(f"Dataset.with_column: column_name must be a string, got {column_name!r}")
        if isinstance(expr, StarExpr) or not isinstance(expr, (Expr, pc.Expression)):
            raise TypeError("Dataset.with_column: expr must be a millstream.expressions expression "
                            f"(col, lit...) or a pyarrow.compute.Expression, got {type(expr).__name__}")
        return Dataset(self._core.with_column(column_name, serialize(to_expression(expr))))

    @public(passthrough=_args.RAY_REMOTE_ARGS_NO_TASK, unsupported=_NO_TASK_ARGS)
    def select_columns(self, cols: Union[str, List[str]], *, compute=None, concurrency=None,
                       **ray_remote_args) -> "Dataset":
        """Keeps only ``cols``, in that order (``[]``: the rows with no columns)."""
        return Dataset(self._core.select_columns(_args.check_columns("Dataset.select_columns", cols)))

    @public(passthrough=_args.RAY_REMOTE_ARGS_NO_TASK, unsupported=_NO_TASK_ARGS)
    def drop_columns(self, cols: Union[str, List[str]], *, compute=None, concurrency=None,
                     **ray_remote_args) -> "Dataset":
        """Removes ``cols``. Dropping every column leaves no rows, as in Ray Data."""
        _args.check_names("Dataset.drop_columns", "cols", cols)
        cols = [cols] if isinstance(cols, str) else list(cols)
        if not cols:
            return self
        if len(set(cols)) != len(cols):
            raise ValueError(f"drop_columns expects unique column names, got: {cols}")
        schema = self._core.known_schema()
        if schema is None:
            def drop(table: pa.Table) -> pa.Table:
                missing = [c for c in cols if c not in table.column_names]
                if missing:
                    raise KeyError(f"drop_columns: column(s) {missing} not found; the columns are {table.column_names}")
                kept = table.drop_columns(cols)
                return kept if kept.num_columns else kept.slice(0, 0)
            with _workers.internal():
                return self.map_batches(drop, batch_format="pyarrow")
        dropped = Dataset(self._core.drop_columns(cols))
        return dropped if set(schema.names) - set(cols) else dropped.limit(0)

    @public(passthrough=_args.RAY_REMOTE_ARGS_NO_TASK, unsupported={"concurrency": _NO_TASK_ARGS["concurrency"]})
    def rename_columns(self, names: Union[List[str], Dict[str, str]], *, concurrency=None,
                       **ray_remote_args) -> "Dataset":
        """Renames columns: a dict old -> new, or a list of new names for every column."""
        _args.check_renames("Dataset.rename_columns", names)
        if isinstance(names, dict):
            return Dataset(self._core.rename_columns(dict(names)))
        current = self.columns()
        if len(names) != len(current):
            raise ValueError(f"rename_columns requires 'names': {names} length match current schema names: {current}.")
        return Dataset(self._core.rename_columns(dict(zip(current, names))))

    @public
    def limit(self, limit: int) -> "Dataset":
        """The first ``limit`` rows (in input order); upstream stops reading once they are produced."""
        return Dataset(self._core.limit(_args.check_int("Dataset.limit", "limit", limit)))

    # ---- all-to-all -----------------------------------------------------------------

    @public
    def sort(self, key: Union[str, List[str]], descending: Union[bool, List[bool]] = False,
             boundaries: Optional[List[Union[int, float]]] = None) -> "Dataset":
        """Rows sorted by ``key`` (a column or a list of columns), ``descending`` per key (a
        bool for all, or a list); nulls last in both directions, NaN just before them, as
        in Ray. Stable: rows with equal keys keep their input order. Runs natively: each
        block is sorted as it streams in, then range partitions are merged; past the memory
        limit, sorted runs spill to disk.

        ``boundaries`` (ints or floats; deduplicated and ordered) split the output into
        ``len(boundaries) + 1`` blocks by the first key, as in Ray: with ``[10, 20]``, rows
        below 10 in the first block, from 10 up to (not including) 20 in the second, 20 and
        above in the third; descending, the same blocks in the reverse order. Nulls and NaN
        are in the last block; a block no row falls in is an empty block. The first key
        must be an integer or floating-point column (else an error when executed). Without
        them, the partitions come from sampled keys."""
        if key is None:
            raise ValueError("Dataset.sort: key must be a column name or a list of column names, not None")
        keys = [key] if isinstance(key, str) else list(key)
        if not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"Dataset.sort: key must be a column name or a non-empty list of column names, got {key!r}")
        if isinstance(descending, bool):
            flags = [descending] * len(keys)
        elif isinstance(descending, (list, tuple)) and all(isinstance(d, bool) for d in descending):
            flags = list(descending)
            if len(flags) != len(keys):
                raise ValueError(f"Dataset.sort: descending has {len(flags)} entries for {len(keys)} keys")
        else:
            raise TypeError(f"Dataset.sort: descending must be a bool or a list of bools, got {descending!r}")
        bounds = _sort_boundaries(boundaries)
        schema = self._core.known_schema()
        if schema is not None:
            for k in keys:
                if k not in schema.names:
                    raise ValueError(f"Dataset.sort: the key column {k!r} is not in the dataset; its columns are {schema.names}")
        return Dataset(self._core.sort(keys, flags, bounds))

    @public(passthrough=_args.RAY_REMOTE_ARGS_NO_TASK)
    def random_shuffle(self, *, seed=None, num_blocks: Optional[int] = None, **ray_remote_args) -> "Dataset":
        """A uniformly random permutation of the rows. ``seed`` (an int, or a
        :class:`RandomSeedConfig`) makes it reproducible: an int gives the same order on
        every execution; ``RandomSeedConfig(seed, reseed_after_execution=True)`` a different,
        reproducible one per execution (e.g. per epoch). Past the memory limit, rows spill."""
        if num_blocks is not None:
            raise DeprecationWarning("`num_blocks` parameter is deprecated in Ray 2.9. random_shuffle() does not "
                                     "support to change the number of output blocks. Use repartition() instead.")
        return Dataset(self._core.random_shuffle(*_seed("Dataset.random_shuffle", seed)))

    @public
    def randomize_block_order(self, *, seed=None) -> "Dataset":
        """The blocks in a random order, each unchanged (cheap; see ``random_shuffle`` for rows)."""
        return Dataset(self._core.randomize_block_order(*_seed("Dataset.randomize_block_order", seed)))

    @public
    def repartition(self, num_blocks: Optional[int] = None, target_num_rows_per_block: Optional[int] = None, *,
                    strict: bool = False, shuffle: bool = False, keys: Optional[List[str]] = None,
                    sort: bool = False) -> "Dataset":
        """Exactly ``num_blocks`` blocks (e.g. to set the number of files a write makes):
        without ``shuffle`` or ``keys``, the rows in order, split and combined into blocks
        whose row counts differ by at most one (with fewer rows than blocks, one row in
        each of the first blocks, then empty ones); with ``keys``, all rows of one key in
        one block (hash partitioning), each block's rows sorted by the keys (ascending,
        nulls last, stable) with ``sort=True``; with ``shuffle=True``, each row in a random
        block. Empty blocks count: ``materialize().num_blocks()`` is ``num_blocks`` (batch
        iteration skips them). ``sort=True`` without ``keys`` raises ``ValueError``: it
        sorts by the keys (Ray Data ignores it there).

        Or, with ``target_num_rows_per_block`` (not with ``num_blocks``), a streaming
        repartition (no exchange): consecutive blocks are bundled into tasks of at least
        that many rows and cut into blocks of exactly that many, small ones combined,
        large ones sliced (zero-copy); each task may end with one smaller block, or, with
        ``strict=True``, every block but the last has exactly that many rows. ``keys`` is
        then ignored with a warning, as is ``sort``, and ``shuffle=True`` raises
        ``ValueError``, as in Ray."""
        import warnings

        if target_num_rows_per_block is not None:
            if keys is not None:
                warnings.warn("`keys` is ignored when `target_num_rows_per_block` is set.")
            if sort is not False:
                warnings.warn("`sort` is ignored when `target_num_rows_per_block` is set.")
            if shuffle:
                warnings.warn("`shuffle` is ignored when `target_num_rows_per_block` is set.")
        elif strict:
            warnings.warn("`strict` is ignored when `target_num_rows_per_block` is not set. "
                          "Use `target_num_rows_per_block` instead of `num_blocks` to enable `strict` mode.")
        if num_blocks is None and target_num_rows_per_block is None:
            raise ValueError("Either `num_blocks` or `target_num_rows_per_block` must be set")
        if num_blocks is not None and target_num_rows_per_block is not None:
            raise ValueError("Only one of `num_blocks` or `target_num_rows_per_block` must be set, but not both.")
        if target_num_rows_per_block is not None and shuffle:
            raise ValueError("`shuffle` must be False when `target_num_rows_per_block` is set.")
        if not isinstance(shuffle, bool):
            raise TypeError(f"Dataset.repartition: shuffle must be a bool, got {shuffle!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"Dataset.repartition: strict must be a bool, got {strict!r}")
        if not isinstance(sort, bool):
            raise TypeError(f"Dataset.repartition: sort must be a bool, got {sort!r}")
        if target_num_rows_per_block is not None:
            rows = _args.check_int("Dataset.repartition", "target_num_rows_per_block",
                                   target_num_rows_per_block, min=1)
            return Dataset(self._core.repartition_rows(rows, strict))
        num_blocks = _args.check_int("Dataset.repartition", "num_blocks", num_blocks, min=1)
        key_list = [] if keys is None else _args.check_columns("Dataset.repartition", keys)
        if sort and not key_list:
            raise ValueError("Dataset.repartition: sort=True sorts each output block by `keys`; pass keys=[...] "
                             "(without keys it has no effect in Ray Data, so it is refused here)")
        schema = self._core.known_schema()
        if schema is not None:
            for k in key_list:
                if k not in schema.names:
                    raise ValueError(f"Dataset.repartition: the key column {k!r} is not in the dataset; its columns are {schema.names}")
        return Dataset(self._core.repartition(num_blocks, shuffle, key_list, sort))

    @public
    def union(self, *other: "Dataset") -> "Dataset":
        """The rows of this dataset and of each of ``other``, streamed as they are produced
        (no exchange); under ``preserve_order`` (and for collecting calls such as
        ``take_all``) all of this one first, then each other in turn, as in Ray."""
        for i, ds in enumerate(other):
            if not isinstance(ds, Dataset):
                raise TypeError(f"Dataset.union: argument {i} is a {type(ds).__name__}, not a Dataset")
        return Dataset(self._core.union([ds._core for ds in other]))

    @public
    def zip(self, *other: "Dataset") -> "Dataset":
        """The columns of this dataset and of each of ``other`` side by side, row by row:
        row r of the result is row r of every input. They must have the same number of
        rows (else ``ValueError`` when executed, naming both counts, as in Ray). A column
        name already taken gets a suffix: ``id``, ``id_1``, ``id_2``... (Ray's rule).
        Streamed natively: each output block is zero-copy slices of the inputs' blocks,
        whatever their block boundaries; no input is materialized."""
        for i, ds in enumerate(other):
            if not isinstance(ds, Dataset):
                raise TypeError(f"Dataset.zip: argument {i} is a {type(ds).__name__}, not a Dataset")
        return Dataset(self._core.zip([ds._core for ds in other]))

    @public
    def random_sample(self, fraction: float, *, seed=None) -> "Dataset":
        """About ``fraction * count`` rows: each row kept with probability ``fraction``
        (0 to 1), in order (no shuffle). Lazy and native, fused with the steps around it.
        ``seed`` (an int or a :class:`RandomSeedConfig`): an int gives the same sample on
        every execution, whatever the timing (block k of task i draws from a generator
        seeded by the seed, i and k; upstream then hands blocks on in order);
        ``RandomSeedConfig(seed, reseed_after_execution=True)`` a different, reproducible
        sample per execution; None a different sample every time. As in Ray, a dataset
        known before execution to make no blocks at all (``range(0)``, a read of empty
        files) raises ``ValueError``; one whose blocks hold no rows (``from_arrow`` of an
        empty table, ``limit(0)``, an empty ``materialize()`` result) gives an empty
        dataset with its schema."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
            raise TypeError(f"Dataset.random_sample: fraction must be a number, got {fraction!r}")
        if fraction < 0 or fraction > 1:
            raise ValueError("Fraction must be between 0 and 1.")
        if self._core.known_to_have_no_blocks():
            raise ValueError("Cannot sample from an empty Dataset.")
        return Dataset(self._core.random_sample(float(fraction), *_seed("Dataset.random_sample", seed)))

    @public(unsupported={"aggregator_ray_remote_args": Unsupported(
        None, why="the join's reduce tasks run on the engine's CPU pool; they take no remote args")})
    def join(self, ds: "Dataset", join_type: str, num_partitions: int, on: Tuple[str] = ("id",),
             right_on: Optional[Tuple[str]] = None, left_suffix: Optional[str] = None,
             right_suffix: Optional[str] = None, *, partition_size_hint: Optional[int] = None,
             aggregator_ray_remote_args: Optional[Dict[str, Any]] = None,
             validate_schemas: bool = False) -> "Dataset":
        """Rows of this dataset joined with ``ds`` on key columns, as Ray Data's ``join``.

        ``join_type``: "inner", "left_outer", "right_outer", "full_outer", "left_semi",
        "right_semi", "left_anti" or "right_anti". ``on``: the left key columns (a tuple or
        list); ``right_on``: the right ones (default: ``on``). Rows match when all their
        keys are equal; a null key matches nothing (its row still appears in outer and
        anti results). Output columns as ``pyarrow.Table.join``: semi/anti joins keep one
        side; inner/left outer: left columns then right non-key columns; right outer: left
        non-key columns then right columns; full outer: left columns (keys coalesced) then
        right non-key columns. A non-key column both sides output gets ``left_suffix`` /
        ``right_suffix``; with neither, such a collision is a ValueError naming it.

        Runs natively as a two-input exchange: both sides are hash-partitioned by key
        into at least ``num_partitions`` partitions (more when one would not fit the
        memory limit), spilling past it, and each partition is joined with the hash table
        on its smaller side. When one side's size is known small before running (a
        from_arrow's bytes, a read's metadata estimate; at most min(1/8 of the memory
        limit, 64 MiB)) and the join type lets it be the build side (inner, and the
        outer/semi/anti joins that keep or output the other side), it is a broadcast join
        instead: one hash table of the small side, the other side's blocks streamed
        through it and never exchanged (output blocks follow that side's blocks, whatever
        ``num_partitions``); ``explain()`` says ``broadcast, build=left|right``, and a
        side that turns out larger than the cap falls back to the exchange.
        Rows come in no particular order. ``partition_size_hint`` is
        deprecated and ignored, as in Ray. ``validate_schemas=True`` fetches both schemas
        (which may run the inputs) and checks the keys before the join is built.
        """
        if not isinstance(ds, Dataset):
            raise TypeError(f"Dataset.join: ds must be a Dataset, got {type(ds).__name__}")
        if not isinstance(join_type, str):
            raise TypeError(f"Dataset.join: join_type must be a str, got {join_type!r}")
        num_partitions = _args.check_int("Dataset.join", "num_partitions", num_partitions, min=1)
        if not isinstance(on, (tuple, list)):
            raise ValueError(f"Expected tuple or list as `on` (got {type(on).__name__})")
        if right_on and not isinstance(right_on, (tuple, list)):
            raise ValueError(f"Expected tuple or list as `right_on` (got {type(right_on).__name__})")
        right_on = right_on or on
        for name, keys in (("on", on), ("right_on", right_on)):
            for k in keys:
                if not isinstance(k, str):
                    raise TypeError(f"Dataset.join: {name} must hold column names, got {k!r}")
        for name, suffix in (("left_suffix", left_suffix), ("right_suffix", right_suffix)):
            if suffix is not None and not isinstance(suffix, str):
                raise TypeError(f"Dataset.join: {name} must be a str or None, got {suffix!r}")
        if partition_size_hint is not None:
            warnings.warn("`partition_size_hint` is deprecated and ignored: the join sizes its partitions "
                          "from the data and the memory limit.", DeprecationWarning, stacklevel=2)
        if not isinstance(validate_schemas, bool):
            raise TypeError(f"Dataset.join: validate_schemas must be a bool, got {validate_schemas!r}")
        if validate_schemas:
            _validate_join_schemas(self.schema(), ds.schema(), list(on), list(right_on))
        return Dataset(self._core.join(ds._core, join_type, num_partitions, list(on), list(right_on),
                                       left_suffix, right_suffix))

    # ---- group-by and aggregates ----------------------------------------------------

    @public
    def groupby(self, key: Union[str, List[str], None], num_partitions: Optional[int] = None) -> "GroupedData":
        """Groups rows by ``key`` (a column, a list of columns, or None: one group of every
        row) for an aggregation: ``.count()``, ``.sum(on)``, ``.aggregate(Sum("x"), ...)``.
        Results have one row per group, sorted by key (nulls last). ``num_partitions`` sets
        the exchange's reduce tasks (None: chosen from the data size and memory limit)."""
        from millstream.grouped_data import GroupedData

        if num_partitions is not None:
            num_partitions = _args.check_int("Dataset.groupby", "num_partitions", num_partitions, min=1)
        grouped = GroupedData(self, key, num_partitions=num_partitions)
        schema = self._core.known_schema()
        if schema is not None:
            for k in grouped._keys:
                if k not in schema.names:
                    raise ValueError(f"Dataset.groupby: the key column {k!r} is not in the dataset; "
                                     f"its columns are {schema.names}")
        return grouped

    @public
    def aggregate(self, *aggs) -> Union[Any, Dict[str, Any]]:
        """The aggregations over the whole dataset, as a dict of output name -> value
        (``{"count()": 100, "sum(x)": 4950}``); None for an empty dataset."""
        rows = self.groupby(None).aggregate(*aggs).take(1)
        return rows[0] if rows else None

    def _build_multicolumn_aggs(self, cls, on, skip_cols=None, **kwargs):
        if on is None:
            schema = self.schema(fetch_if_missing=True)
            on = [c for c in (schema.names if schema is not None else []) if c not in (skip_cols or [])]
        if not isinstance(on, list):
            on = [on]
        if not on:
            raise ValueError("At least 1 column to aggregate on has to be provided")
        return [cls(c, **kwargs) for c in on]

    @staticmethod
    def _aggregate_result(result):
        if result is not None and len(result) == 1:
            return next(iter(result.values()))
        return result

    @public
    def sum(self, on: Optional[Union[str, List[str]]] = None, ignore_nulls: bool = True) -> Union[Any, Dict[str, Any]]:
        """Sum of ``on``: a scalar for one column, a dict ``{"sum(c)": ...}`` for a list (or
        None: every column); None for an empty dataset."""
        from millstream.aggregate import Sum
        return self._aggregate_result(self.aggregate(*self._build_multicolumn_aggs(Sum, on, ignore_nulls=ignore_nulls)))

    @public
    def min(self, on: Optional[Union[str, List[str]]] = None, ignore_nulls: bool = True) -> Union[Any, Dict[str, Any]]:
        """Minimum of ``on``: a scalar for one column, a dict for several; None when empty."""
        from millstream.aggregate import Min
        return self._aggregate_result(self.aggregate(*self._build_multicolumn_aggs(Min, on, ignore_nulls=ignore_nulls)))

    @public
    def max(self, on: Optional[Union[str, List[str]]] = None, ignore_nulls: bool = True) -> Union[Any, Dict[str, Any]]:
        """Maximum of ``on``: a scalar for one column, a dict for several; None when empty."""
        from millstream.aggregate import Max
        return self._aggregate_result(self.aggregate(*self._build_multicolumn_aggs(Max, on, ignore_nulls=ignore_nulls)))

    @public
    def mean(self, on: Optional[Union[str, List[str]]] = None, ignore_nulls: bool = True) -> Union[Any, Dict[str, Any]]:
        """Mean of ``on``: a scalar for one column, a dict for several; None when empty."""
        from millstream.aggregate import Mean
        return self._aggregate_result(self.aggregate(*self._build_multicolumn_aggs(Mean, on, ignore_nulls=ignore_nulls)))

    @public
    def std(self, on: Optional[Union[str, List[str]]] = None, ddof: int = 1,
            ignore_nulls: bool = True) -> Union[Any, Dict[str, Any]]:
        """Standard deviation of ``on`` (divisor ``n - ddof``): a scalar for one column, a
        dict for several; None when empty."""
        from millstream.aggregate import Std
        return self._aggregate_result(
            self.aggregate(*self._build_multicolumn_aggs(Std, on, ddof=ddof, ignore_nulls=ignore_nulls)))

    @public
    def unique(self, column: str, ignore_nulls: bool = False) -> List[Any]:
        """The distinct values of ``column`` as a list (in order of first appearance; a
        null among them unless ``ignore_nulls``; every NaN as one), computed natively
        (``aggregate(Unique(column))``); None for an empty dataset, as in Ray."""
        from millstream.aggregate import Unique
        if not isinstance(column, str):
            raise TypeError(f"Dataset.unique: column must be a column name (a str), got {column!r}")
        return self._aggregate_result(self.aggregate(Unique(column, ignore_nulls=ignore_nulls)))

    # ---- execution ------------------------------------------------------------------

    def _execute(self, batch_size=None, drop_last=False, ordered=False, keep_empty=False):
        if ray_backend.active():  # DataContext.execution_backend = "ray"
            return ray_backend.execute(self, batch_size, drop_last, ordered, keep_empty)
        context = DataContext.get_current()._to_core()
        # Calls that collect every row return them in input order (as Ray's do).
        if ordered:
            context.execution_options.preserve_order = True
        return _start(self._core, context, batch_size, drop_last, keep_empty)

    def _batches(self, batch_size=None, drop_last=False, ordered=False, handle=None,
                 keep_empty=False) -> Iterator[pa.RecordBatch]:
        """The execution's blocks; ``handle`` (an iterator's ``_ExecutionHandle``) lets
        another thread cancel the execution while this one waits in it; ``keep_empty``
        (whole blocks only) hands on empty blocks too."""
        it = self._execute(batch_size, drop_last, ordered, keep_empty)
        if handle is not None:
            handle.attach(it)
        progress = ProgressReporter(it.stats, DataContext.get_current()).start()
        try:
            while True:
                batch = it.next()
                if batch is None:
                    break
                yield batch
        finally:
            if handle is not None:
                handle.detach()
            progress.stop()
            self._finish(it)

    def _drain(self, it) -> int:
        """Runs an execution to its end without handing batches to Python."""
        progress = ProgressReporter(it.stats, DataContext.get_current()).start()
        try:
            return it.drain()
        finally:
            progress.stop()
            self._finish(it)

    def _finish(self, it) -> None:
        try:
            self._last_stats = it.stats()
        finally:
            it.close()
        context = DataContext.get_current()
        failed = sum(op.errored_tasks for op in self._last_stats.operators)
        if failed:
            import logging

            logging.getLogger("millstream").warning(
                "%d task(s) failed and were skipped (max_errored_blocks=%s); their rows are "
                "missing from the output", failed, context.max_errored_blocks)
        if context.enable_auto_log_stats:
            import logging

            # The totals line alone, or every operator's counters with verbose_stats_logs.
            text = self.stats() if context.verbose_stats_logs else self.stats().rstrip().splitlines()[-1]
            logging.getLogger("millstream").info("Execution stats:\n%s", text)

    @public
    def iter_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                     batch_format: Optional[str] = "default", drop_last: bool = False,
                     local_shuffle_buffer_size: Optional[int] = None,
                     local_shuffle_seed: Optional[int] = None, _collate_fn=None) -> Iterator[Any]:
        """Streams the dataset as batches of ``batch_size`` rows in ``batch_format``.

        The pipeline runs ahead while memory allows; when the consumer is slow, upstream
        stops. Blocks come as they finish (in input order with ``preserve_order``).
        ``batch_size=None`` yields whole blocks; ``batch_format=None`` the native
        block, a pyarrow Table. A background thread keeps ``prefetch_batches`` batches
        formatted ahead of the loop (0: none). ``local_shuffle_buffer_size=n``
        shuffles rows within a buffer of at least n rows before batching (seeded by
        ``local_shuffle_seed``), as training loops want.
        """
        return self.iterator().iter_batches(
            prefetch_batches=prefetch_batches, batch_size=batch_size, batch_format=batch_format,
            drop_last=drop_last, local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed, _collate_fn=_collate_fn)

    @public
    def iter_torch_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                           dtypes=None, device="auto", collate_fn=None, drop_last: bool = False,
                           local_shuffle_buffer_size: Optional[int] = None,
                           local_shuffle_seed: Optional[int] = None) -> Iterator[Any]:
        """Batches as dicts of ``torch.Tensor``; see ``DataIterator.iter_torch_batches``."""
        return self.iterator().iter_torch_batches(
            prefetch_batches=prefetch_batches, batch_size=batch_size, dtypes=dtypes, device=device,
            collate_fn=collate_fn, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size, local_shuffle_seed=local_shuffle_seed)

    @public
    def iter_tf_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                        dtypes=None, drop_last: bool = False,
                        local_shuffle_buffer_size: Optional[int] = None,
                        local_shuffle_seed: Optional[int] = None) -> Iterator[Any]:
        """Batches as dicts of ``tf.Tensor`` (needs TensorFlow); see ``DataIterator``."""
        return self.iterator().iter_tf_batches(
            prefetch_batches=prefetch_batches, batch_size=batch_size, dtypes=dtypes, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size, local_shuffle_seed=local_shuffle_seed)

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
        """A ``tf.data.Dataset`` of (features, labels) (needs TensorFlow); see ``DataIterator``."""
        return self.iterator().to_tf(
            feature_columns, label_columns, additional_columns=additional_columns,
            prefetch_batches=prefetch_batches, batch_size=batch_size, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size, local_shuffle_seed=local_shuffle_seed)

    @public
    def iter_jax_batches(self, *, prefetch_batches: int = 1, batch_size: Optional[int] = 256,
                         dtypes=None, drop_last: bool = False,
                         local_shuffle_buffer_size: Optional[int] = None,
                         local_shuffle_seed: Optional[int] = None) -> Iterator[Any]:
        """Batches as dicts of ``jax.Array`` (needs JAX); see ``DataIterator``."""
        return self.iterator().iter_jax_batches(
            prefetch_batches=prefetch_batches, batch_size=batch_size, dtypes=dtypes, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size, local_shuffle_seed=local_shuffle_seed)

    @public
    def iter_rows(self) -> Iterator[Dict[str, Any]]:
        """Streams the rows as dicts (in the order blocks finish, unless ``preserve_order``)."""
        return self.iterator().iter_rows()

    @public
    def iterator(self) -> DataIterator:
        """A DataIterator over this dataset; each of its iterations executes it again."""
        return _DatasetIterator(self)

    @public(unsupported={"locality_hints": Unsupported(None, why="one process: there are no nodes to place the consumers on")})
    def streaming_split(self, n: int, *, equal: bool = False, locality_hints=None) -> List[DataIterator]:
        """``n`` DataIterators fed by one execution, for ``n`` consumers (threads)
        iterating at once, as Ray Train's workers do.

        Each consumer's queue holds at most two blocks: a slow consumer gets no more
        until it takes some, and the execution stops when all queues are full, so memory
        stays bounded. With ``equal=False`` a block goes to whoever has room (a slow
        consumer never holds up the others); ``equal=True`` gives every iterator exactly
        ``total // n`` rows and drops the remainder, as Ray does. Iterating all ``n``
        again executes the dataset again (an epoch starts once all finished the last).
        See ``millstream.streaming_split`` for the details."""
        from millstream.streaming_split import split

        return split(self, n, equal, locality_hints)

    @public(unsupported={"locality_hints": Unsupported(None, why="one process: there are no nodes to place the splits on")})
    def split(self, n: int, *, equal: bool = False, locality_hints=None) -> List["MaterializedDataset"]:
        """Executes the dataset and splits it into ``n`` disjoint ``MaterializedDataset``s,
        in order. ``equal=False`` splits the list of blocks (consecutive blocks, as
        ``np.array_split`` of it: with fewer blocks than ``n`` some splits are empty);
        ``equal=True`` gives each exactly ``count // n`` rows and drops the last
        ``count % n``, as Ray does. Splits are zero-copy slices of the blocks."""
        from millstream import split

        return split.split(self, n, equal)

    @public
    def split_at_indices(self, indices: List[int]) -> List["MaterializedDataset"]:
        """Executes the dataset and splits it at the row ``indices`` (like ``np.split``):
        ``len(indices) + 1`` splits. Indices must be sorted and not negative
        (``ValueError``); one past the end gives empty splits. Zero-copy slices."""
        from millstream import split

        return split.split_at_indices(self, indices)

    @public
    def split_proportionately(self, proportions: List[float]) -> List["MaterializedDataset"]:
        """Executes the dataset and splits it by ``proportions`` (each > 0, summing to less
        than 1; the last split takes the rest): ``len(proportions) + 1`` splits, each of
        at least one row (Ray's rounding: ``int(count * cumulative proportion)``, moved
        down where two would meet; ``ValueError`` when that cannot be done)."""
        from millstream import split

        return split.split_proportionately(self, proportions)

    @public
    def train_test_split(self, test_size: Union[int, float], *, shuffle: bool = False,
                         seed: Optional[int] = None,
                         stratify: Optional[str] = None) -> Tuple["MaterializedDataset", "MaterializedDataset"]:
        """(train, test) MaterializedDatasets. A float ``test_size`` in (0, 1) is a
        fraction: train gets ``int(count * (1 - test_size))`` rows, the first ones; an int
        is the number of test rows (the last ones). ``shuffle=True`` shuffles first
        (``seed`` as in ``random_shuffle``). ``stratify`` (a column) keeps each class's
        proportion: the rows grouped by that column (sorted by it, nulls last), of each
        class of n rows the last ``int(n * test_size)`` go to test, as Ray does."""
        from millstream import split

        return split.train_test_split(self, test_size, shuffle, seed, stratify)

    @public
    def take(self, limit: int = 20) -> List[Dict[str, Any]]:
        """The first ``limit`` rows as dicts."""
        _args.check_int("Dataset.take", "limit", limit)
        limited = self.limit(limit)
        try:
            return limited.take_all()
        finally:
            self._last_stats = limited._last_stats

    @public
    def take_all(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Every row as a dict, in input order; with ``limit``, raises if there are more."""
        _args.check_int("Dataset.take_all", "limit", limit, none_ok=True)
        rows = []
        for batch in self._batches(None, ordered=True):
            rows.extend(_batch.rows_of(batch))
            if limit is not None and len(rows) > limit:
                raise ValueError(f"the dataset has more than the given limit of {limit} rows")
        return rows

    @public
    def take_batch(self, batch_size: int = 20, *, batch_format: Optional[str] = "default"):
        """The first ``batch_size`` rows as one batch."""
        _args.check_int("Dataset.take_batch", "batch_size", batch_size, min=1)
        fmt = _batch.check_batch_format(batch_format)
        limited = self.limit(batch_size)
        try:
            table = limited.to_arrow()
        finally:
            self._last_stats = limited._last_stats
        if table.num_rows == 0:
            raise ValueError("take_batch: the dataset is empty")
        return _batch.to_format(table, fmt)

    @public
    def show(self, limit: int = 20) -> None:
        """Prints the first ``limit`` rows."""
        _args.check_int("Dataset.show", "limit", limit)
        for row in self.take(limit):
            print(row)

    @public
    def count(self) -> int:
        """The number of rows: from metadata when the plan allows, else by executing."""
        rows = self._core.count_from_metadata()
        if rows is not None:
            return rows
        return self._drain(self._execute())

    @public
    def schema(self, fetch_if_missing: bool = True) -> Optional[Schema]:
        """The schema: from the plan when known, else from the first block produced."""
        schema = self._core.known_schema()
        if schema is None and fetch_if_missing:
            for batch in self.limit(1)._batches(None):
                schema = batch.schema
                break
        return None if schema is None else Schema(schema)

    @public
    def columns(self, fetch_if_missing: bool = True) -> Optional[List[str]]:
        schema = self.schema(fetch_if_missing)
        return None if schema is None else schema.names

    @public
    def to_arrow(self) -> pa.Table:
        """Every row as one pyarrow Table, in input order."""
        batches = list(self._batches(None, ordered=True))
        if batches:
            return _batch.concat_batches(batches)
        schema = self.schema()
        return (schema.base_schema if schema else pa.schema([])).empty_table()

    @public
    def to_pandas(self, limit: Optional[int] = None):
        """Every row as one pandas DataFrame, in input order (``limit``: raise if there are more rows)."""
        _args.check_int("Dataset.to_pandas", "limit", limit, none_ok=True)
        table = self.to_arrow()
        if limit is not None and table.num_rows > limit:
            raise ValueError(f"the dataset has {table.num_rows} rows, more than limit={limit}")
        # The frame's arrays come from the C allocator, which gives a large one back to the
        # system when it is freed; Arrow's pool (mimalloc) would keep it cached for the
        # thread that made it.
        return _batch.to_pandas(table, memory_pool=pa.system_memory_pool())

    @public
    def materialize(self) -> "MaterializedDataset":
        """Executes now and keeps the blocks in memory, as they were made (empty ones
        included, as Ray keeps them: ``num_blocks()`` counts them); later uses re-read
        those. Under the Ray backend the blocks stay in the cluster's object store (the
        driver keeps their refs, rows and bytes)."""
        if ray_backend.active():
            return ray_backend.materialize(self)
        batches = list(self._batches(None, ordered=True, keep_empty=True))
        if batches:
            table = _batch.concat_batches(batches)
        else:
            schema = self.schema()
            table = (schema.base_schema if schema else pa.schema([])).empty_table()
        stats = self._last_stats
        out = MaterializedDataset(_core.Dataset.from_arrow_blocks(table, [b.num_rows for b in batches]))
        out._last_stats = stats
        return out

    @public
    def input_files(self) -> List[str]:
        """The files this dataset reads (its file reads' listings), each once."""
        return _core.input_files(self._core)

    @public
    def stats(self) -> str:
        """Per-operator counters of the last execution, then its totals."""
        if self._last_stats is None:
            return "Dataset has not been executed yet: no stats (execute it, e.g. with materialize())."
        return _auto_workers.annotate(self._last_stats.to_string(), self._auto_udfs)

    def _write(self, path, fmt: str, *, mode="append", partition_cols=None, filename_provider=None,
               min_rows_per_file=None, max_rows_per_file=None, num_rows_per_file=None,
               arrow_open_stream_args=None, options: Optional[Dict[str, Any]] = None,
               filesystem=None, concurrency=None) -> None:
        fn_name = f"write_{fmt}"
        concurrency = _args.check_int(fn_name, "concurrency", concurrency, min=1, none_ok=True)
        if concurrency:
            # The most write tasks running at once.
            options = dict(options or {}, concurrency=concurrency)
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str) or not path:
            raise ValueError(f"{fn_name}: path must be a directory path, got {path!r}")
        mode = _files.save_mode(fn_name, mode)
        if ray_backend.active():  # write tasks on the Ray cluster
            return ray_backend.write(self, path, fmt, mode=mode, partition_cols=partition_cols,
                                     filename_provider=filename_provider, min_rows_per_file=min_rows_per_file,
                                     max_rows_per_file=max_rows_per_file, num_rows_per_file=num_rows_per_file,
                                     arrow_open_stream_args=arrow_open_stream_args, options=options,
                                     filesystem=filesystem)
        min_rows, max_rows = _files.rows_per_file(fn_name, num_rows_per_file, min_rows_per_file,
                                                  max_rows_per_file)
        _files.filename_provider(fn_name, filename_provider)
        stream_compression = _files.open_stream_args(fn_name, arrow_open_stream_args)
        from millstream import read_api
        spec = read_api.filesystem_spec(fn_name, filesystem)
        if spec is not None or path.lower().startswith(("s3://", "gs://", "gcs://")):
            return self._write_remote(path, fmt, spec, mode=mode, partition_cols=partition_cols,
                                      filename_provider=filename_provider, min_rows=min_rows,
                                      max_rows=max_rows, stream_compression=stream_compression,
                                      options=options)
        # Local paths; another URI scheme (gs://...) raises before anything is made.
        path = _core.local_path(path, fn_name)
        if os.path.isfile(path):
            raise FileExistsError(f"{fn_name}: '{path}' is a file; give a directory")
        directory = os.path.abspath(path)
        created = not os.path.lexists(directory)
        cols = [partition_cols] if isinstance(partition_cols, str) else list(partition_cols or [])
        sink = dict(options or {}, partition_cols=cols, min_rows_per_file=min_rows,
                    max_rows_per_file=max_rows, filename_provider=filename_provider,
                    stream_compression=stream_compression)
        if fmt == "parquet" and filename_provider is not None:
            sink.update(filename_provider=_files.ParquetNames(filename_provider, mode),
                        filename_template=True)
        # The engine checks the options here, before the directory is touched.
        plan = self._core.with_write(directory, _files.core_format(fmt), _files.core_write_options(sink))
        # mode: the directory is created, left alone (ignore), emptied (overwrite) or refused
        # (error) by the engine before anything runs.
        if not _core.prepare_write_dir(directory, mode, fn_name):
            import logging
            logging.getLogger("millstream").warning("[SaveMode=ignore] Skipping %s: it exists", path)
            return
        before = _files.listing(directory, "parquet") if fmt == "parquet" else set()
        self._drain(_start(plan, DataContext.get_current()._to_core(), None, False))
        if created and _files.remove_if_empty(directory):
            return  # no rows: as in Ray, the directory this write created is removed
        if fmt == "parquet" and sink.get("schema") is None:
            # Blocks of different tasks may differ in columns or types: one schema for all.
            _files.unify_parquet_files(_files.listing(directory, "parquet") - before,
                                       _files.parquet_rewrite_args(sink))

    def _write_remote(self, path, fmt, spec, *, mode, partition_cols, filename_provider, min_rows,
                      max_rows, stream_compression, options) -> None:
        """A write to an object store (s3:// or ``filesystem=``): each file is uploaded under
        its final name and appears only when complete."""
        from millstream import read_api
        fn_name = f"write_{fmt}"
        handle, directory = _core.resolve_path(read_api.fs_path(spec and spec.get("fs"), path), spec, fn_name)
        if handle.type_name == "local":
            return self._write(directory, fmt, mode=mode, partition_cols=partition_cols,
                               filename_provider=filename_provider, min_rows_per_file=min_rows,
                               max_rows_per_file=max_rows, options=options,
                               arrow_open_stream_args={"compression": stream_compression})
        cols = [partition_cols] if isinstance(partition_cols, str) else list(partition_cols or [])
        sink = dict(options or {}, partition_cols=cols, min_rows_per_file=min_rows,
                    max_rows_per_file=max_rows, filename_provider=filename_provider,
                    stream_compression=stream_compression, filesystem=handle,
                    **read_api.retry_options(fn_name))
        if fmt == "parquet" and filename_provider is not None:
            sink.update(filename_provider=_files.ParquetNames(filename_provider, mode),
                        filename_template=True)
        plan = self._core.with_write(directory, _files.core_format(fmt), _files.core_write_options(sink))
        if not _core.prepare_write_dir_on(handle, directory, mode, fn_name):
            import logging
            logging.getLogger("millstream").warning("[SaveMode=ignore] Skipping %s: it exists", path)
            return
        self._drain(_start(plan, DataContext.get_current()._to_core(), None, False))

    @public(unsupported={"ray_remote_args": _args.RAY_REMOTE_ARGS_NO_TASK.rule()})
    def write_datasink(self, datasink, *, ray_remote_args: Optional[Dict[str, Any]] = None,
                       concurrency: Optional[int] = None) -> None:
        """Writes through a user's ``Datasink`` (Ray's API): ``on_write_start(schema)``,
        then ``write(blocks, ctx)`` once per write task (``min_rows_per_write`` rows
        bundled), each on an engine worker, then ``on_write_complete(WriteResult)`` with
        every ``write`` return value, or ``on_write_failed(error)`` and the error raised.
        ``concurrency`` caps how many ``write`` calls run at once."""
        concurrency = _args.check_int("write_datasink", "concurrency", concurrency, min=1, none_ok=True)
        import threading
        from millstream.datasource import TaskContext, WriteResult
        if not callable(getattr(datasink, "write", None)):
            raise TypeError(f"write_datasink expects a Datasink (with write), got {type(datasink).__name__}")
        lock = threading.Lock()
        returns: List[Any] = []
        totals = [0, 0, 0]  # rows, bytes, tasks

        def write(batch: pa.Table) -> pa.Table:
            with lock:
                index = totals[2]
                totals[2] += 1
            value = datasink.write([batch], TaskContext(task_idx=index, op_name="Write"))
            with lock:
                returns.append((index, value))
                totals[0] += batch.num_rows
                totals[1] += batch.nbytes
            return batch.schema.empty_table().select([])

        write.__name__ = f"Write{datasink.get_name()}" if hasattr(datasink, "get_name") else "Write"
        rows = getattr(datasink, "min_rows_per_write", None)
        try:
            on_start = getattr(datasink, "on_write_start", None)
            if on_start is not None:
                on_start(self.schema().base_schema if self.schema() is not None else None)
            with _workers.internal():
                plan = self.map_batches(write, batch_format="pyarrow", batch_size=rows, concurrency=concurrency)
            for _ in plan._batches():
                pass
            result = WriteResult(totals[0], totals[1], [v for _, v in sorted(returns, key=lambda r: r[0])])
            complete = getattr(datasink, "on_write_complete", None)
            if complete is not None:
                complete(result)
        except Exception as error:
            failed = getattr(datasink, "on_write_failed", None)
            if failed is not None:
                failed(error)
            raise

    @public(unsupported=_WRITE_UNSUPPORTED)
    def write_numpy(self, path: str, *, column: str, filesystem=None, try_create_dir: bool = True,
                    arrow_open_stream_args: Optional[Dict[str, Any]] = None, filename_provider=None,
                    min_rows_per_file: Optional[int] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
                    concurrency: Optional[int] = None, num_rows_per_file: Optional[int] = None,
                    mode="append") -> None:
        """One ``.npy`` file per block of ``column`` (``min_rows_per_file`` rows per file
        when given; the last may have fewer), each complete before it appears; Ray's
        ``mode``, ``filename_provider`` and ``arrow_open_stream_args`` compression. Local
        paths, ``s3://`` URIs or ``filesystem=`` (S3, fsspec): each object is stored whole,
        never partly. Files are written one at a time, so any ``concurrency`` holds."""
        from millstream import write_api
        _args.check_int("write_numpy", "concurrency", concurrency, min=1, none_ok=True)
        write_api.write_numpy(self, path, column=column, mode=mode, filename_provider=filename_provider,
                              min_rows_per_file=min_rows_per_file, num_rows_per_file=num_rows_per_file,
                              arrow_open_stream_args=arrow_open_stream_args, filesystem=filesystem)

    @public(unsupported=_WRITE_UNSUPPORTED)
    def write_images(self, path: str, column: str, file_format: str = "png", *, filesystem=None,
                     try_create_dir: bool = True, arrow_open_stream_args: Optional[Dict[str, Any]] = None,
                     filename_provider=None, ray_remote_args: Optional[Dict[str, Any]] = None,
                     concurrency: Optional[int] = None, mode="append") -> None:
        """One image file per row of ``column`` (ndarrays, encoded by Pillow as
        ``file_format``), each complete before it appears; Ray's ``mode`` and
        ``filename_provider`` (the row's number added to the task's name). Local paths,
        ``s3://`` URIs or ``filesystem=`` as ``write_numpy``. Files are written one at a
        time, so any ``concurrency`` holds."""
        from millstream import write_api
        _args.check_int("write_images", "concurrency", concurrency, min=1, none_ok=True)
        write_api.write_images(self, path, column=column, file_format=file_format, mode=mode,
                               filename_provider=filename_provider, arrow_open_stream_args=arrow_open_stream_args,
                               filesystem=filesystem)

    @public(passthrough=_args.PARQUET_WRITE_ARGS, unsupported={**_WRITE_UNSUPPORTED,
            "catalog": Unsupported(None, why="no catalog support")})
    def write_parquet(self, path: str, *, partition_cols: Optional[List[str]] = None,
                      filesystem=None, catalog=None, try_create_dir: bool = True,
                      arrow_open_stream_args=None, filename_provider=None, arrow_parquet_args_fn=None,
                      min_rows_per_file: Optional[int] = None, max_rows_per_file: Optional[int] = None,
                      ray_remote_args: Optional[Dict[str, Any]] = None, concurrency: Optional[int] = None,
                      num_rows_per_file: Optional[int] = None, mode="append", **arrow_parquet_args) -> None:
        """Writes Parquet files into directory ``path`` (a str or ``os.PathLike``), one or
        more per task.

        ``mode`` (Ray's SaveMode, or its value) says what happens when ``path`` exists, even
        empty: "append" (default) adds files, "overwrite" first deletes everything inside
        ``path`` (not atomic, as in Ray: the old files are gone before the new are written),
        "error" (or "create") raises ``ValueError``, "ignore" writes nothing.
        A write of no rows removes the directory it created (as Ray does).
        ``min_rows_per_file`` bundles rows into a task until it has that many (a hint, as
        in Ray); ``max_rows_per_file`` caps every file (a task writes ``..._000001`` and on);
        ``num_rows_per_file`` is the deprecated name of ``min_rows_per_file``.
        ``filename_provider``: a Ray ``FilenameProvider``; ``get_filename_for_task(write_uuid,
        task_index)`` names each task's files as Ray's Parquet writer does (``name`` or
        ``name.parquet`` -> ``name-{i}.parquet``, ``{i}`` numbering the task's files from
        0); with mode="append" the name must hold ``write_uuid`` (else ``ValueError``). ``**arrow_parquet_args`` (or ``arrow_parquet_args_fn()``, whose keys
        win): pyarrow.parquet.write_table's ``compression`` (default snappy; None: none),
        ``compression_level``, ``row_group_size``, ``use_dictionary`` (True or False for every
        column; unset, a column more than half of whose first values (up to 16Ki) in a
        file's first block are distinct is written plain and the others with a dictionary;
        a first block of fewer than 1Ki rows keeps every dictionary), ``write_statistics``,
        ``version``, ``data_page_size``, and ``schema`` (every block cast to it).

        With ``partition_cols``, rows go to Hive-style ``key=value/`` subdirectories
        (those columns are left out of the files; ``read_parquet`` restores them), named
        as ``pyarrow.dataset``'s hive partitioning names them: values percent-encoded
        (``/`` is ``%2F``), null as ``__HIVE_DEFAULT_PARTITION__``. ``path`` is a local
        directory or a ``file://`` URI; other schemes raise ``NotImplementedError``.
        Each file is written under a hidden temporary name and renamed when complete: a
        failure or a killed process never leaves a partial file that a reader would load.
        """
        _args.check_names("Dataset.write_parquet", "partition_cols", partition_cols, none_ok=True)
        args = _files.resolve_args("write_parquet", _args.PARQUET_WRITE_ARGS, arrow_parquet_args,
                                   arrow_parquet_args_fn, "arrow_parquet_args_fn")
        self._write(path, "parquet", mode=mode, partition_cols=partition_cols, filesystem=filesystem,
                    concurrency=concurrency,
                    filename_provider=filename_provider, min_rows_per_file=min_rows_per_file,
                    max_rows_per_file=max_rows_per_file, num_rows_per_file=num_rows_per_file,
                    arrow_open_stream_args=arrow_open_stream_args,
                    options=_files.parquet_options("write_parquet", args))

    @public(passthrough=_args.CSV_WRITE_ARGS, unsupported=_WRITE_UNSUPPORTED)
    def write_csv(self, path: str, *, filesystem=None, try_create_dir: bool = True,
                  arrow_open_stream_args=None, filename_provider=None, arrow_csv_args_fn=None,
                  min_rows_per_file: Optional[int] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
                  concurrency: Optional[int] = None, num_rows_per_file: Optional[int] = None,
                  mode="append", **arrow_csv_args) -> None:
        """Writes CSV files into directory ``path``, one per task. ``mode``,
        ``min_rows_per_file``/``num_rows_per_file`` as in ``write_parquet``;
        ``filename_provider``'s name is each task's file name as it is;
        ``arrow_open_stream_args={"compression": "gzip"}`` (bz2, brotli, zstd, lz4) compresses
        each file's bytes, the name unchanged, as in Ray. ``write_options`` (a ``pyarrow.csv.WriteOptions``, in
        ``**arrow_csv_args`` or ``arrow_csv_args_fn()``): ``include_header``,
        ``delimiter``, ``quoting_style``, ``quoting_header``, ``batch_size``."""
        args = _files.resolve_args("write_csv", _args.CSV_WRITE_ARGS, arrow_csv_args,
                                   arrow_csv_args_fn, "arrow_csv_args_fn")
        self._write(path, "csv", mode=mode, filename_provider=filename_provider, filesystem=filesystem,
                    concurrency=concurrency,
                    min_rows_per_file=min_rows_per_file, num_rows_per_file=num_rows_per_file,
                    arrow_open_stream_args=arrow_open_stream_args,
                    options=_files.csv_options("write_csv", args))

    @public(passthrough=_args.JSON_WRITE_ARGS, unsupported=_WRITE_UNSUPPORTED)
    def write_json(self, path: str, *, filesystem=None, try_create_dir: bool = True,
                   arrow_open_stream_args=None, filename_provider=None, pandas_json_args_fn=None,
                   min_rows_per_file: Optional[int] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
                   concurrency: Optional[int] = None, num_rows_per_file: Optional[int] = None,
                   mode="append", **pandas_json_args) -> None:
        """Writes JSON Lines files into directory ``path``, one per task. ``mode``,
        ``min_rows_per_file``/``num_rows_per_file`` as in ``write_parquet``;
        ``filename_provider``'s name is each task's file name as it is."""
        _files.resolve_args("write_json", _args.JSON_WRITE_ARGS, pandas_json_args,
                            pandas_json_args_fn, "pandas_json_args_fn")
        self._write(path, "json", mode=mode, filename_provider=filename_provider, filesystem=filesystem,
                    concurrency=concurrency,
                    min_rows_per_file=min_rows_per_file, num_rows_per_file=num_rows_per_file,
                    arrow_open_stream_args=arrow_open_stream_args)

    @public
    def explain(self) -> None:
        """Prints the logical, optimized and physical plans (fused operators by name)."""
        print(self._explain_str(), end="")

    def _explain_str(self) -> str:
        if ray_backend.active():
            return ray_backend.explain(self)
        return _auto_workers.annotate(self._core.explain(DataContext.get_current()._to_core()), self._auto_udfs)

    def __iter__(self):
        raise TypeError("a Dataset is not iterable; use iter_rows() or iter_batches()")

    def __repr__(self) -> str:
        rows = self._core.count_from_metadata()
        schema = self._core.known_schema()
        schema_text = "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}" if schema is not None else "Unknown schema"
        return (f"{type(self).__name__}(num_rows={'?' if rows is None else rows}, "
                f"schema={schema_text}, plan={self._core})")


def _shuffled_batches(blocks: Iterator[pa.RecordBatch], buffer_rows: int, batch_size: int,
                      drop_last: bool, seed: Optional[int]) -> Iterator[pa.Table]:
    """Batches of ``batch_size`` rows drawn at random from a buffer of at least
    ``buffer_rows`` rows, refilled from ``blocks`` as it drains."""
    rng = np.random.default_rng(seed)
    buffer: List[pa.RecordBatch] = []
    buffered = 0

    def draw(final: bool):
        nonlocal buffer, buffered
        table = _batch.concat_batches(buffer).combine_chunks()
        shuffled = table.take(pa.array(rng.permutation(table.num_rows)))
        # Keep buffer_rows back for mixing with what comes next, unless the input is over.
        keep = 0 if final else min(buffer_rows, shuffled.num_rows)
        out_rows = (shuffled.num_rows - keep) // batch_size * batch_size
        if final:
            out_rows = shuffled.num_rows
        for start in builtins.range(0, out_rows, batch_size):
            piece = shuffled.slice(start, min(batch_size, out_rows - start))
            if piece.num_rows == batch_size or not drop_last:
                yield piece
        rest = shuffled.slice(out_rows)
        buffer = rest.to_batches() if rest.num_rows else []
        buffered = rest.num_rows

    for block in blocks:
        if block.num_rows == 0:
            continue
        buffer.append(block)
        buffered += block.num_rows
        if buffered >= buffer_rows + batch_size:
            yield from draw(final=False)
    if buffered:
        yield from draw(final=True)


class MaterializedDataset(Dataset):
    """A Dataset whose blocks are in memory (from ``materialize`` or ``from_*``)."""

    @public
    def num_blocks(self) -> int:
        """The number of blocks it holds (e.g. what ``repartition`` made), empty ones included."""
        return sum(1 for _ in self._batches(None, ordered=True, keep_empty=True))

    @public
    def size_bytes(self) -> int:
        """The bytes of memory its blocks take."""
        return sum(b.nbytes for b in self._batches(None, ordered=True))

    def _execute(self, batch_size=None, drop_last=False, ordered=False, keep_empty=False):
        # Its blocks are computed: streaming them in order costs nothing (as in Ray).
        return super()._execute(batch_size, drop_last, ordered=True, keep_empty=keep_empty)


# ---- sources ------------------------------------------------------------------------


def _sort_boundaries(boundaries) -> list:
    """``sort``'s ``boundaries`` checked as Ray checks them (ints or floats), as the engine
    takes them; None or empty: none (sampled)."""
    if boundaries is None:
        return []
    if not isinstance(boundaries, (list, tuple)):
        raise TypeError(f"Dataset.sort: boundaries must be a list of ints or floats, got {boundaries!r}")
    out = []
    for item in boundaries:
        if not isinstance(item, (int, float)):
            raise ValueError("The type of items in boundaries must be int or float.")
        if isinstance(item, float):
            if item != item:
                raise ValueError("Dataset.sort: a boundary is NaN; boundaries must be numbers")
            out.append(float(item))
        else:
            if not -2**63 <= item < 2**63:
                raise ValueError(f"Dataset.sort: the boundary {item} does not fit in a 64-bit integer")
            out.append(int(item))
    return out


def _blocks(override_num_blocks, parallelism=-1):
    if override_num_blocks is not None:
        return _args.check_int("source", "override_num_blocks", override_num_blocks, min=1)
    parallelism = _args.check_int("source", "parallelism", parallelism, min=-1, none_ok=True)
    if parallelism is not None and parallelism > 0:
        return parallelism
    return None


@public(unsupported={"concurrency": Unsupported(None, why=_NOT_YET)})
def range(n: int, *, parallelism: int = -1, concurrency=None, override_num_blocks=None) -> Dataset:  # noqa: A001
    """Rows ``{"id": i}`` for i in [0, n)."""
    n = _args.check_int("range", "n", n)
    return Dataset(_core.Dataset.range(n, _blocks(override_num_blocks, parallelism)))


@public(unsupported={"concurrency": Unsupported(None, why=_NOT_YET)})
def range_tensor(n: int, *, shape: Tuple = (1,), parallelism: int = -1, concurrency=None,
                 override_num_blocks=None) -> Dataset:
    """Rows ``{"data": t}`` for i in [0, n): ``t`` an int64 ndarray of ``shape`` filled with
    i (a fixed-shape tensor column)."""
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"range_tensor: shape must be a tuple of ints, got {shape!r}")
    shape = tuple(_args.check_int("range_tensor", "shape", d) for d in shape)

    def tensors(batch):
        ids = batch["id"].reshape((-1,) + (1,) * len(shape))
        return {"data": np.broadcast_to(ids, (len(ids),) + shape).copy()}

    with _workers.internal():
        return range(n, parallelism=parallelism, override_num_blocks=override_num_blocks).map_batches(tensors)


@public
def from_arrow(tables, *, override_num_blocks=None) -> MaterializedDataset:
    """A dataset of pyarrow Tables (or one Table), or of Arrow IPC stream bytes of one (as
    Ray takes them)."""
    def from_ipc(data):
        if isinstance(data, (bytes, bytearray, memoryview)):
            return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        return data

    tables = from_ipc(tables)
    if isinstance(tables, (list, tuple)):
        tables = [from_ipc(t) for t in tables]
        tables = [t if isinstance(t, pa.Table) else pa.table(t) for t in tables]
        table = _batch.concat_tables(tables) if tables else pa.table({})
    elif isinstance(tables, pa.RecordBatch):
        table = pa.Table.from_batches([tables])
    else:
        table = tables
    if not isinstance(table, pa.Table):
        raise TypeError(f"from_arrow expects pyarrow Tables, got {type(tables).__name__}")
    _batch.unique_names(table, "from_arrow")
    return MaterializedDataset(_core.Dataset.from_arrow(table, _blocks(override_num_blocks)))


@public
def from_items(items: List[Any], *, parallelism: int = -1, override_num_blocks=None) -> MaterializedDataset:
    """A dataset of Python items (a list, another sequence, a numpy array): dicts become
    rows; other values become ``{"item": v}``; numpy array values make tensor columns."""
    if not isinstance(items, (collections.abc.Sequence, np.ndarray)):
        raise TypeError(f"from_items expects a list (or another sequence, a numpy array), got {type(items).__name__}")
    rows = [it if isinstance(it, dict) else {"item": it} for it in items]
    table = _batch.table_from_rows(rows, None, "from_items")
    blocks = _blocks(override_num_blocks, parallelism) or max(1, min(len(rows), 200))
    return MaterializedDataset(_core.Dataset.from_arrow(table, blocks))


@public
def from_pandas(dfs, override_num_blocks=None) -> MaterializedDataset:
    """A dataset of pandas DataFrames (or one DataFrame)."""
    import pandas as pd

    dfs = [dfs] if isinstance(dfs, pd.DataFrame) else list(dfs)
    # Copies of the frames' memory: a later change to a frame leaves the dataset as it was.
    tables = [_batch.table_from_pandas(df) for df in dfs]
    return from_arrow(tables, override_num_blocks=override_num_blocks)


@public
def from_numpy(ndarrays) -> MaterializedDataset:
    """A dataset with one column "data" from numpy arrays (rows along the first axis)."""
    arrays = [ndarrays] if isinstance(ndarrays, np.ndarray) else list(ndarrays)
    # Copies (the caller still holds the arrays): a later change leaves the dataset as it was.
    tables = [pa.table({"data": _batch._array_from_numpy(a, sole_owner=False)}) for a in arrays]
    return from_arrow(tables)


@public
def from_torch(dataset, local_read: bool = False) -> MaterializedDataset:
    """A dataset of the items of a torch ``Dataset``, in column "item" (read now, in this
    process: ``local_read`` changes nothing here). Tensor items make a tensor column;
    others (tuples, images) a column of Python objects. Needs torch (ImportError if not)."""
    from millstream import torch_ingest

    if not isinstance(local_read, bool):
        raise TypeError(f"from_torch: local_read must be a bool, got {local_read!r}")
    return from_items(torch_ingest.from_torch_items(dataset))


@public(unsupported={"concurrency": Unsupported(None, why=_NOT_YET)})
def from_huggingface(dataset, parallelism: int = -1, concurrency=None,
                     override_num_blocks=None) -> MaterializedDataset:
    """A dataset of a Hugging Face ``datasets.Dataset`` (its Arrow table, no copy of the
    data) or ``IterableDataset`` (its rows, read now). Needs ``datasets`` (ImportError if
    not); a ``DatasetDict`` raises ``ValueError`` (pass one split)."""
    from millstream import huggingface

    rows = huggingface.table_of(dataset)
    blocks = _blocks(override_num_blocks, parallelism)
    if isinstance(rows, list):
        return from_items(rows, override_num_blocks=blocks)
    return from_arrow(rows, override_num_blocks=blocks)


@public(passthrough=_args.PARQUET_READ_ARGS, unsupported={
    "catalog": Unsupported(None, why="no catalog support"),
    "num_cpus": Unsupported(None, why="a read task takes one CPU slot"),
    "num_gpus": Unsupported(None, why="a read task takes one CPU slot"),
    "memory": Unsupported(None, why="a read task takes one CPU slot"),
    "ray_remote_args": _args.RAY_REMOTE_ARGS_NO_TASK.rule(),
})
def read_parquet(paths: Union[str, List[str]], *, filesystem=None, catalog=None,
                 columns: Optional[List[str]] = None, parallelism: int = -1,
                 num_cpus: Optional[float] = None, num_gpus: Optional[float] = None,
                 memory: Optional[float] = None, ray_remote_args: Optional[Dict[str, Any]] = None,
                 tensor_column_schema=None, partition_filter=None, partitioning="hive",
                 shuffle=None, include_paths: bool = False, include_row_hash: bool = False,
                 file_extensions: Optional[List[str]] = ["parquet"],  # noqa: B006 (Ray's default)
                 ignore_missing_paths: bool = False, skip_paths=None, concurrency: Optional[int] = None,
                 override_num_blocks: Optional[int] = None, filter=None,  # noqa: A002
                 **arrow_parquet_args) -> Dataset:
    """Parquet files: a file, a directory (recursive; hidden names skipped), a glob, or a list.

    ``columns`` reads only those columns; ``filter`` (a ``pyarrow.compute.Expression`` or
    a string like ``"qty > 10"``) keeps matching rows and skips row groups whose statistics
    rule it out. In directories and globs only files ending in one of ``file_extensions``
    are read (None: every file); files named explicitly are always read.
    ``partitioning="hive"`` (the default; None turns it off) turns ``key=value``
    directories into string columns (percent-decoded, ``__HIVE_DEFAULT_PARTITION__``
    as null), and a ``filter`` on them skips whole files. Local paths, ``file://``,
    ``s3://`` and ``gs://`` URIs, or ``filesystem=`` (pyarrow's local, S3 or GCS
    filesystem, or an fsspec one); another scheme (``hdfs://``...) raises
    ``NotImplementedError``.
    ``include_paths`` adds a "path" column; ``ignore_missing_paths`` skips paths that do
    not exist; ``partition_filter`` (a callable taking the list of file paths, such as
    Ray's ``PathPartitionFilter``) chooses the files; ``shuffle="files"`` (or a
    ``FileShuffleConfig``) reads them in a random order; ``schema=`` (a pyarrow.Schema)
    reads every file as that schema (cast, missing columns null).
    ``skip_paths`` (a path or a list) leaves out files with those paths, and every file
    under a directory among them, whether they exist or not. ``include_row_hash`` adds a
    uint64 "row_hash" column, Ray's deterministic hash of the file's path and the row's
    position among the rows read from it (after ``filter``). ``tensor_column_schema``
    (``{column: (dtype, shape)}``) reads binary columns holding raw C-order arrays
    (``ndarray.tobytes()``) as tensor columns of that dtype and shape. ``concurrency``
    caps how many read tasks run at once.
    """
    file_extensions = _args.check_names("read_parquet", "file_extensions", file_extensions, none_ok=True)
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("read_parquet: no paths given")
    if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
        raise TypeError(f"read_parquet: columns must be a list of names, got {columns!r}")
    expr = None if filter is None else serialize(to_expression(filter))
    extensions = [e.lstrip(".") for e in (file_extensions or [])]
    style = getattr(partitioning, "style", partitioning)
    style = getattr(style, "value", style)
    if style not in ("hive", None):
        raise NotImplementedError(f"read_parquet: partitioning style {style!r} is not supported; use 'hive' or None")
    schema = arrow_parquet_args.get("schema")
    if schema is not None and not isinstance(schema, pa.Schema):
        raise TypeError(f"read_parquet: schema must be a pyarrow.Schema, got {type(schema).__name__}")
    remote = filesystem is not None or any(p.lower().startswith(("s3://", "gs://", "gcs://")) for p in paths)
    if not isinstance(include_row_hash, bool):
        raise TypeError(f"read_parquet: include_row_hash must be a bool, got {include_row_hash!r}")
    concurrency = _args.check_int("read_parquet", "concurrency", concurrency, min=1, none_ok=True)
    if (include_paths or ignore_missing_paths or partition_filter is not None or shuffle is not None or schema
            or remote or skip_paths or include_row_hash or tensor_column_schema is not None or concurrency):
        from millstream import read_api
        if not isinstance(include_paths, bool):
            raise TypeError(f"read_parquet: include_paths must be a bool, got {include_paths!r}")
        fs, files = read_api._list("read_parquet", paths, extensions, ignore_missing_paths, partition_filter,
                                   filesystem, skip_paths=skip_paths)
        options = {"include_paths": include_paths, **read_api._shuffle_options("read_parquet", shuffle),
                   **read_api.retry_options("read_parquet"),
                   **read_api.parquet_extras("read_parquet", files, include_row_hash, tensor_column_schema)}
        if concurrency:
            options["concurrency"] = concurrency
        core = _core.read_parquet_files(fs, files, list(columns or []), expr, _blocks(override_num_blocks, parallelism),
                                        style == "hive", options, schema)
    else:
        core = _core.Dataset.read_parquet(paths, list(columns or []), expr,
                                          _blocks(override_num_blocks, parallelism), extensions, style == "hive")
    # columns=[]: the rows with no columns (the engine's read takes no columns as all).
    return Dataset(core.select_columns([]) if columns is not None and not columns else core)
