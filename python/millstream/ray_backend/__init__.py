"""The Ray backend: millstream's engine run inside the tasks and actors of a Ray cluster.

Opt in with ``DataContext.get_current().execution_backend = "ray"`` (or the environment
variable ``MILLSTREAM_BACKEND=ray``) after connecting with ``ray.init(address=...)``; the
default ``"local"`` runs in this process as always.

A driver-side coordinator (this package, in Python) splits a dataset's lineage (recorded by
``millstream._args.public`` for every public call) into stages at its all-to-all steps
(``planner``), runs each stage as Ray tasks or actors that replay the stage's calls with
millstream's local engine on their input blocks (``stages``, ``exchange``), and streams the
blocks, kept in Ray's object store, to the consumer (``executor``). The driver holds only
object refs and each block's row and byte counts.
"""

from __future__ import annotations

import contextlib
import threading

_local = threading.local()


def active() -> bool:
    """Whether executions started in this thread go to Ray: ``execution_backend == "ray"``
    and not inside a Ray task or a driver-side fallback (which run the local engine)."""
    from millstream.context import DataContext

    backend = DataContext.get_current().execution_backend
    if backend == "local" or getattr(_local, "forced_local", False):
        return False
    if backend != "ray":
        raise ValueError(f"DataContext: execution_backend must be 'local' or 'ray', got {backend!r}")
    return True


@contextlib.contextmanager
def local_only():
    """Runs the block with the local engine whatever ``execution_backend`` says."""
    before = getattr(_local, "forced_local", False)
    _local.forced_local = True
    try:
        yield
    finally:
        _local.forced_local = before


def execute(dataset, batch_size, drop_last, ordered, keep_empty):
    """An execution of ``dataset`` on the Ray cluster, with the local engine's iterator
    interface (``next``, ``drain``, ``stats``, ``close``)."""
    from millstream.ray_backend import executor

    return executor.RayExecution(dataset, batch_size, drop_last, ordered, keep_empty)


def materialize(dataset):
    """``dataset`` executed on the cluster, its blocks kept there (a MaterializedDataset
    holding object refs and each block's rows and bytes)."""
    from millstream.ray_backend import executor

    return executor.materialize(dataset)


def write(dataset, path, fmt, **options):
    """A write whose files are written by the last stage's tasks, on the workers."""
    from millstream.ray_backend import executor

    return executor.write(dataset, path, fmt, **options)


def explain(dataset) -> str:
    """The stages of ``dataset``'s plan on Ray and where each runs."""
    from millstream.ray_backend import planner

    return planner.plan(dataset).explain()
