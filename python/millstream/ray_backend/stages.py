"""What runs inside Ray's workers: each task replays its stage's calls with millstream's
local engine on its input (a group of files, or blocks from the object store) and returns
its output block and a small metadata dict (rows, bytes), as two objects."""

from __future__ import annotations

import importlib
from typing import List

import pyarrow as pa


def _enter(context) -> None:
    """The driver's DataContext in this worker, with the local backend (and UDFs on
    threads: the worker is a process of its own). Unless the user set
    a CPU limit, the engine in this task uses the CPUs Ray gave the task (its ``num_cpus``,
    at least one): tasks side by side on a node then share its cores as Ray planned."""
    import ray

    from millstream.context import DataContext

    object.__setattr__(context, "execution_backend", "local")
    # A Ray worker is already a process of its own: its UDFs run on the engine's threads.
    object.__setattr__(context, "python_udf_workers", "threads")
    limits = context.execution_options.resource_limits
    if limits.cpu is None:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
        limits.cpu = max(1.0, float(cpus))
    DataContext._set_current(context)


def meta(table: pa.Table) -> dict:
    return {"rows": table.num_rows, "bytes": table.nbytes}


def replay(dataset, ops, task=None):
    """``ops`` applied to ``dataset``. ``task`` (the task's index in its stage) reseeds a
    seeded ``random_sample``, so that tasks draw different rows."""
    for op in ops:
        kwargs = op.kwargs
        if op.method == "random_sample" and task is not None and kwargs.get("seed") is not None:
            kwargs = dict(kwargs, seed=(int(kwargs["seed"]) * 1_000_003 + task) % (1 << 62))
        dataset = getattr(dataset, op.method)(*op.args, **kwargs)
    return dataset


def from_tables(tables: List[pa.Table]):
    """A local dataset of ``tables`` (empty ones dropped unless all are)."""
    import millstream

    full = [t for t in tables if t.num_rows > 0]
    return millstream.from_arrow(full or list(tables[:1]) or [pa.table({})])


def finish(dataset, ops, sink, task=None) -> tuple:
    """Replays ``ops`` on ``dataset``, then writes (``sink``) or returns the block."""
    from millstream import ray_backend

    with ray_backend.local_only():
        table = replay(dataset, ops, task).to_arrow()
        if sink is not None:
            fmt, path, kwargs = sink  # Dataset._write's arguments, checked on the driver
            if table.num_rows:
                # One block: one write task, as the task is one of the write's (its files
                # are named for the task's index with a filename_provider).
                from millstream import _core
                from millstream.dataset import MaterializedDataset

                one = MaterializedDataset(_core.Dataset.from_arrow_blocks(table, [table.num_rows]))
                one._write(path, fmt, **kwargs)
            return pa.table({}), {"rows": table.num_rows, "bytes": 0}
    return table, meta(table)


def read_task(context, source: dict, group: List[str], ops, sink, task: int = 0) -> tuple:
    """Reads ``group`` (files) as ``source`` (the read call) would, then the fused ops."""
    from millstream import ray_backend

    _enter(context)
    fn = getattr(importlib.import_module(source["module"]), source["name"])
    args, kwargs = list(source["args"]), dict(source["kwargs"])
    if args:
        args[0] = group
    else:
        kwargs["paths"] = group
    with ray_backend.local_only():
        dataset = fn(*args, **kwargs)
    return finish(dataset, ops, sink, task)


def map_task(context, ops, sink, task, *tables) -> tuple:
    """The fused ops over blocks from the object store (``task``: its index in the stage)."""
    _enter(context)
    return finish(from_tables(list(tables)), ops, sink, task)


class PoolActor:
    """An actor of an actor-pool stage: constructs the callable class once and runs each
    bundle of blocks through it (as a function now) and the ops fused after it."""

    def __init__(self, context, op, ops):
        from millstream.ray_backend.planner import Op

        _enter(context)
        kwargs = dict(op.replayed().kwargs)
        cls = op.args[0] if op.args else kwargs.pop("fn")
        ctor_args = kwargs.pop("fn_constructor_args", None) or ()
        ctor_kwargs = kwargs.pop("fn_constructor_kwargs", None) or {}
        instance = cls(*ctor_args, **ctor_kwargs)
        self._ops = [Op(op.method, (instance,) + tuple(op.args[1:]), kwargs)] + list(ops)

    def run(self, sink, *tables) -> tuple:
        """``tables`` through the class and the ops after it, written by ``sink`` if any."""
        return finish(from_tables(list(tables)), self._ops, sink)

    def ready(self) -> str:
        """The node this actor runs on (its pool places blocks by it)."""
        import ray

        return ray.get_runtime_context().get_node_id()


def slice_task(table: pa.Table, offset: int, length: int) -> tuple:
    part = table.slice(offset, length)
    return part, meta(part)


_remote_cache: dict = {}


def remote(fn, **options):
    """``fn`` as a Ray remote function (or actor class), made once per process."""
    import ray

    key = fn
    if key not in _remote_cache:
        _remote_cache[key] = ray.remote(fn)
    handle = _remote_cache[key]
    return handle.options(**options) if options else handle
