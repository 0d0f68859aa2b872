"""DataContext: the engine's knobs, with Ray Data's names and defaults.

Every execution reads the current context when it starts. Setting a name that is not a
field raises AttributeError naming the nearest real field, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import os
import threading
from dataclasses import dataclass, field, fields
from typing import Optional


class _Strict:
    """Refuses attributes that are not declared fields, suggesting the closest one."""

    def __setattr__(self, name, value):
        names = [f.name for f in fields(self)]
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise AttributeError(f"{type(self).__name__} has no field '{name}'{hint}")
        object.__setattr__(self, name, value)


@dataclass
class ExecutionResources(_Strict):
    """Amounts of CPU, GPU and memory. None means "use what the machine has"."""

    cpu: Optional[float] = None
    gpu: Optional[float] = None
    object_store_memory: Optional[int] = None
    memory: Optional[int] = None

    @classmethod
    def zero(cls) -> "ExecutionResources":
        return cls(cpu=0, gpu=0, object_store_memory=0, memory=0)

    @classmethod
    def for_limits(cls, cpu=None, gpu=None, object_store_memory=None, memory=None):
        return cls(cpu=cpu, gpu=gpu, object_store_memory=object_store_memory, memory=memory)


@dataclass
class ExecutionOptions(_Strict):
    """Options of one execution (Ray Data's ExecutionOptions).

    resource_limits: caps on CPU slots, GPU slots and bytes of live blocks
        (``object_store_memory``; default 30% of physical memory).
    exclude_resources: subtracted from the limits.
    preserve_order: deliver output in input order (costs memory and latency).
    locality_with_output, actor_locality_enabled: cluster-only; no effect on one machine.
    verbose_progress: show every operator's progress.
    """

    resource_limits: ExecutionResources = field(default_factory=ExecutionResources)
    exclude_resources: ExecutionResources = field(default_factory=ExecutionResources.zero)
    preserve_order: bool = False
    locality_with_output: bool = False
    actor_locality_enabled: bool = True
    verbose_progress: bool = True


@dataclass
class DataContext(_Strict):
    """The engine's settings; ``DataContext.get_current()`` returns the process-wide one.

    Fields that only mean something on a cluster exist, with Ray's defaults, and have no
    effect on a single machine (they are listed in the README).
    """

    target_max_block_size: int = 128 * 1024 * 1024
    target_min_block_size: int = 1 * 1024 * 1024
    read_op_min_num_blocks: int = 200
    execution_options: ExecutionOptions = field(default_factory=ExecutionOptions)
    op_resource_reservation_enabled: bool = True
    op_resource_reservation_ratio: float = 0.5
    enable_progress_bars: bool = True
    enable_operator_progress_bars: bool = True
    progress_bar_log_interval: int = 5
    enable_auto_log_stats: bool = False
    verbose_stats_logs: bool = False
    max_errored_blocks: int = 0
    eager_free: bool = False
    # Cluster-only (no effect on one machine).
    scheduling_strategy: str = "SPREAD"
    scheduling_strategy_large_args: str = "DEFAULT"
    large_args_threshold: int = 50 * 1024 * 1024
    use_push_based_shuffle: bool = False
    enable_tensor_extension_casting: bool = True

    _lock = threading.Lock()
    _current = None  # the process-wide instance (not a field)

    @classmethod
    def get_current(cls) -> "DataContext":
        """The process-wide context; created with defaults on first use."""
        with cls._lock:
            if DataContext._current is None:
                DataContext._current = cls()
            return DataContext._current

    @classmethod
    def _set_current(cls, context: "DataContext") -> None:
        DataContext._current = context

    def _to_core(self) -> dict:
        """The settings the C++ engine reads, as a plain dict."""
        limits = self.execution_options.resource_limits
        exclude = self.execution_options.exclude_resources
        return {
            "target_max_block_size": int(self.target_max_block_size),
            "target_min_block_size": int(self.target_min_block_size),
            "read_op_min_num_blocks": int(self.read_op_min_num_blocks),
            "cpu": None if limits.cpu is None else float(limits.cpu),
            "gpu": None if limits.gpu is None else float(limits.gpu),
            "object_store_memory": None if limits.object_store_memory is None else int(limits.object_store_memory),
            "exclude_cpu": float(exclude.cpu or 0),
            "exclude_gpu": float(exclude.gpu or 0),
            "exclude_object_store_memory": int(exclude.object_store_memory or 0),
            "preserve_order": bool(self.execution_options.preserve_order),
            "op_resource_reservation_enabled": bool(self.op_resource_reservation_enabled),
            "op_resource_reservation_ratio": float(self.op_resource_reservation_ratio),
        }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
