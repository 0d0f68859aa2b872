"""Compute strategies, as in Ray Data: where a map's function runs."""

from __future__ import annotations

from typing import Optional

from millstream._args import check_int, public


class TaskPoolStrategy:
    """Run the function as tasks; ``size`` caps how many run at once (None: no cap)."""

    @public
    def __init__(self, size: Optional[int] = None):
        self.size = check_int("TaskPoolStrategy", "size", size, min=1, none_ok=True)

    def __repr__(self) -> str:
        return f"TaskPoolStrategy(size={self.size})"


class ActorPoolStrategy:
    """Run a callable class on a pool of actors: ``size`` fixed, or ``min_size`` to
    ``max_size`` autoscaling (see ``DataContext.autoscaling_config``).

    An actor runs ``max_concurrency`` tasks at once (a ``ray_remote_args`` key, 1 by
    default), and calls its instance from one of them at a time unless
    ``enable_true_multi_threading`` is True (then up to ``max_concurrency`` calls overlap).
    ``max_tasks_in_flight_per_actor`` (4 by default, or ``DataContext``'s) is how many
    bundles the autoscaler expects each actor to have running or waiting."""

    @public
    def __init__(self, *, size: Optional[int] = None, min_size: Optional[int] = None,
                 max_size: Optional[int] = None, initial_size: Optional[int] = None,
                 max_tasks_in_flight_per_actor: Optional[int] = None,
                 enable_true_multi_threading: Optional[bool] = None):
        size, min_size, max_size, initial_size, max_tasks_in_flight_per_actor = (
            check_int("ActorPoolStrategy", name, value, min=1, none_ok=True) for name, value in (
                ("size", size), ("min_size", min_size), ("max_size", max_size),
                ("initial_size", initial_size), ("max_tasks_in_flight_per_actor", max_tasks_in_flight_per_actor)))
        if enable_true_multi_threading is not None and not isinstance(enable_true_multi_threading, bool):
            raise TypeError("ActorPoolStrategy: enable_true_multi_threading must be a bool or None, "
                            f"got {type(enable_true_multi_threading).__name__}")
        if size is not None:
            if min_size is not None or max_size is not None or initial_size is not None:
                raise ValueError("ActorPoolStrategy: give size, or min_size/max_size/initial_size, not both")
            min_size = max_size = size
        self.min_size = 1 if min_size is None else min_size
        self.max_size = max_size
        if self.min_size < 1 or (self.max_size is not None and self.max_size < self.min_size):
            raise ValueError(f"ActorPoolStrategy needs 1 <= min_size <= max_size; got {self.min_size}, {self.max_size}")
        if initial_size is not None and (initial_size < self.min_size or
                                         (self.max_size is not None and initial_size > self.max_size)):
            raise ValueError(f"ActorPoolStrategy: initial_size ({initial_size}) must be within "
                             f"[min_size, max_size] = [{self.min_size}, {self.max_size}]")
        self.initial_size = initial_size
        self.max_tasks_in_flight_per_actor = max_tasks_in_flight_per_actor
        self.enable_true_multi_threading = bool(enable_true_multi_threading)

    def __repr__(self) -> str:
        return f"ActorPoolStrategy(min_size={self.min_size}, max_size={self.max_size})"


@public
def get_gpu_ids() -> list:
    """The GPU ids this UDF may use, as Ray's ``ray.get_gpu_ids()``: inside a map with
    ``num_gpus`` (an actor keeps its devices for its lifetime; a task pool's task gets
    its own for the task), the device indices assigned to it; an empty list elsewhere.

    ``num_gpus=2`` gets two devices; fractional ``num_gpus`` (e.g. 0.5) shares a device
    with other fractions while they sum to at most one. On threads the ids index this
    process's visible devices; in a worker process (``python_udf_workers="processes"``)
    ``CUDA_VISIBLE_DEVICES`` is set to the actor's devices and the ids are those it names,
    as on a Ray actor (there, ``"cuda"`` is the actor's first device). Use it to pick the
    device::

        class Model:
            def __init__(self):
                self.device = f"cuda:{millstream.get_gpu_ids()[0]}"
    """
    import os

    from millstream import _core

    ids = list(_core.current_gpu_ids())
    if not ids and os.environ.get("MILLSTREAM_GPU_IDS"):
        # In a worker process (python_udf_workers="processes"): the devices its
        # CUDA_VISIBLE_DEVICES names, as Ray's actors see them.
        ids = [int(v) if v.isdigit() else v for v in os.environ["MILLSTREAM_GPU_IDS"].split(",")]
    return ids
