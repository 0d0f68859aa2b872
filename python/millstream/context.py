"""DataContext: the engine's knobs, with Ray Data's names and defaults.

Every execution reads the current context when it starts. Setting a name that is not a
field raises AttributeError naming the nearest real field, so a typo never passes silently.
"""

from __future__ import annotations

import os
import enum
import threading
from dataclasses import dataclass, field, fields
from typing import Optional

from millstream._args import INT64_MAX, check_int, check_number, nearest, public


class _Strict:
    """Refuses attributes that are not declared fields, suggesting the closest one."""

    def __setattr__(self, name, value):
        names = [f.name for f in fields(self)]
        if name not in names and not isinstance(getattr(type(self), name, None), property):
            close = _nested_path(self, name) or nearest(name, names)
            hint = f"; did you mean '{close}'?" if close else ""
            raise AttributeError(f"{type(self).__name__} has no field '{name}'{hint}")
        object.__setattr__(self, name, value)


def _nested_path(obj: _Strict, name: str) -> Optional[str]:
    """The dotted path of a field called ``name`` in an options object held by ``obj``
    (``ctx.preserve_order``: 'execution_options.preserve_order'), or None."""
    for f in fields(obj):
        value = getattr(obj, f.name, None)
        if isinstance(value, _Strict):
            if name in [g.name for g in fields(value)]:
                return f"{f.name}.{name}"
            inner = _nested_path(value, name)
            if inner:
                return f"{f.name}.{inner}"
    return None


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
    @public
    def for_limits(cls, cpu=None, gpu=None, object_store_memory=None, memory=None):
        return cls(cpu=cpu, gpu=gpu, object_store_memory=object_store_memory, memory=memory)


@dataclass
class ExecutionOptions(_Strict):
    """Options of one execution (Ray Data's ExecutionOptions).

    resource_limits: caps on CPU slots, GPU slots and bytes of live blocks
        (``object_store_memory``; default 30% of physical memory).
    exclude_resources: subtracted from the limits.
    preserve_order: stream output in input order (costs memory and latency); calls
        that collect every row, and take/limit, keep input order without it.
    locality_with_output, actor_locality_enabled: as in Ray, under the Ray backend
        (``DataContext.execution_backend = "ray"``): True (or a list of node ids) places
        every task and actor, softly, on the driver's node (or in turn on those listed);
        actor_locality_enabled (the default) gives a block to an actor on a node holding
        it when one has room. No effect on one machine.
    verbose_progress: show every operator's progress.
    """

    resource_limits: ExecutionResources = field(default_factory=ExecutionResources)
    exclude_resources: ExecutionResources = field(default_factory=ExecutionResources.zero)
    preserve_order: bool = False
    locality_with_output: bool = False
    actor_locality_enabled: bool = True
    verbose_progress: bool = True


@dataclass
class AutoscalingConfig(_Strict):
    """When an autoscaling actor pool (``concurrency=(min, max)``) grows and shrinks.

    Utilization is (tasks running + bundles waiting) / (actors x max tasks in flight per
    actor, 4 by default). When every actor is busy (running ``max_concurrency`` tasks) and
    utilization reaches the upscaling
    threshold, the pool adds up to ``actor_pool_max_upscaling_delta`` actors per
    scheduling round; at or below the downscaling threshold it retires an idle actor.
    It never leaves [min, max].
    """

    actor_pool_util_upscaling_threshold: float = 1.75
    actor_pool_util_downscaling_threshold: float = 0.5
    actor_pool_max_upscaling_delta: int = 1


# Ray 2.58's defaults: the AWS SDK's words for transient failures.
DEFAULT_RETRIED_IO_ERRORS = (
    "AWS Error INTERNAL_FAILURE",
    "AWS Error NETWORK_CONNECTION",
    "AWS Error SLOW_DOWN",
    "AWS Error UNKNOWN (HTTP status 503)",
    "AWS Error SERVICE_UNAVAILABLE",
)
DEFAULT_WRITE_FILE_RETRY_ON_ERRORS = (
    "AWS Error INTERNAL_FAILURE",
    "AWS Error NETWORK_CONNECTION",
    "AWS Error SLOW_DOWN",
    "AWS Error UNKNOWN (HTTP status 503)",
)

class ShuffleStrategy(str, enum.Enum):
    """Ray's shuffle strategies (``DataContext.shuffle_strategy``)."""

    SORT_SHUFFLE_PULL_BASED = "sort_shuffle_pull_based"
    SORT_SHUFFLE_PUSH_BASED = "sort_shuffle_push_based"
    HASH_SHUFFLE = "hash_shuffle"
    HASH_SHUFFLE_V2 = "hash_shuffle_v2"
    GPU_SHUFFLE = "gpu_shuffle"


def _cluster_only(default):
    """A Ray Data field that only means something on a cluster (or in a Ray feature
    millstream does not have): kept with Ray's default so code setting it still runs."""
    return field(default_factory=lambda: default, metadata={"effective": False})


@dataclass
class DataContext(_Strict):
    """The engine's settings; ``DataContext.get_current()`` returns the process-wide one.

    Every field of Ray Data 2.58's DataContext exists here with Ray's name and default.
    Those that steer this engine: ``target_max_block_size``, ``target_min_block_size``,
    ``read_op_min_num_blocks``, ``execution_options`` (resource limits, excluded
    resources, preserve_order), ``op_resource_reservation_enabled/ratio``,
    ``autoscaling_config``, ``downstream_capacity_backpressure_ratio``,
    ``max_tasks_in_flight_per_actor``, ``max_errored_blocks``, ``enable_progress_bars``,
    ``enable_operator_progress_bars``,
    ``progress_bar_log_interval``, ``enable_auto_log_stats``, ``verbose_stats_logs``,
    ``retried_io_errors`` (object-store reads and writes), ``streaming_read_buffer_size``
    (object-store reads), ``large_args_threshold`` (Ray backend: a stage's calls, with
    their UDFs and arguments, that pickle to more bytes are put in the object store once
    instead of travelling with every task).
    One field is millstream's own (Ray has none like it): ``python_udf_workers``, where
    the Python UDFs of ``map``/``map_batches``/``flat_map``/``filter`` run: ``"threads"``
    (the default: the engine's worker threads, sharing this process's GIL) or
    ``"processes"`` (worker processes, blocks passed through shared memory, so a UDF
    that keeps the GIL busy uses every core) or ``"auto"`` (a function UDF starts on
    threads and moves to processes once its calls are measured to be held back by the
    GIL; see ``millstream._auto_workers``). It applies to the transforms added while
    it is set (as Ray takes a dataset's context when the dataset is made).
    Another is ``execution_backend``: ``"local"`` (the default, or the environment variable
    ``MILLSTREAM_BACKEND``) runs executions in this process; ``"ray"`` runs them on the Ray
    cluster ``ray.init(address=...)`` connected to (see ``millstream.ray_backend``).
    The others only mean something on a Ray cluster or for Ray features not built here;
    they are accepted and have no effect (``DataContext.cluster_only_fields()`` lists them).
    """

    target_max_block_size: Optional[int] = 128 * 1024 * 1024
    target_min_block_size: int = 1 * 1024 * 1024
    read_op_min_num_blocks: int = 200
    min_parallelism: int = _cluster_only(200)
    execution_options: ExecutionOptions = field(default_factory=ExecutionOptions)
    op_resource_reservation_enabled: bool = True
    op_resource_reservation_ratio: float = 0.5
    autoscaling_config: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    downstream_capacity_backpressure_ratio: Optional[float] = 2.0
    max_tasks_in_flight_per_actor: Optional[int] = None
    max_errored_blocks: int = 0
    # millstream's own: "threads", "processes" or "auto" (see the docstring and the README).
    python_udf_workers: str = "threads"
    # millstream's own: "local" or "ray" (env MILLSTREAM_BACKEND); see millstream.ray_backend.
    execution_backend: str = field(default_factory=lambda: os.environ.get("MILLSTREAM_BACKEND", "local"))
    enable_progress_bars: bool = True
    enable_operator_progress_bars: bool = True
    enable_progress_bar_name_truncation: bool = _cluster_only(True)  # names always fit the terminal
    progress_bar_log_interval: int = 5
    enable_auto_log_stats: bool = False
    verbose_stats_logs: bool = False
    eager_free: bool = _cluster_only(False)  # blocks are always freed when their last user is done
    enable_tensor_extension_casting: bool = _cluster_only(True)
    raise_original_map_exception: bool = _cluster_only(False)  # the original is always raised
    print_on_execution_start: bool = _cluster_only(True)
    # Cluster-only, or Ray features not built here (accepted; no effect).
    # Bytes read ahead per request from an object store (file readers other than Parquet).
    streaming_read_buffer_size: int = 32 * 1024 * 1024
    enable_pandas_block: bool = _cluster_only(True)
    actor_prefetcher_enabled: bool = _cluster_only(False)
    use_push_based_shuffle: bool = _cluster_only(False)
    pipeline_push_based_shuffle_reduce_tasks: bool = _cluster_only(True)
    default_hash_shuffle_parallelism: int = _cluster_only(200)
    hash_shuffle_compression: str = _cluster_only("zstd")
    hash_shuffle_reduce_batch_size: int = _cluster_only(16)
    hash_shuffle_reduce_get_timeout_s: float = _cluster_only(1800.0)
    shuffle_input_batch_bytes: int = _cluster_only(1024 * 1024 * 1024)
    max_hash_shuffle_aggregators: Optional[int] = _cluster_only(None)
    min_hash_shuffle_aggregator_wait_time_in_s: int = _cluster_only(300)
    hash_shuffle_aggregator_health_warning_interval_s: int = _cluster_only(30)
    max_hash_shuffle_finalization_batch_size: Optional[int] = _cluster_only(None)
    join_operator_actor_num_cpus_override: Optional[float] = _cluster_only(None)
    hash_shuffle_operator_actor_num_cpus_override: Optional[float] = _cluster_only(None)
    hash_aggregate_operator_actor_num_cpus_override: Optional[float] = _cluster_only(None)
    gpu_shuffle_num_actors: Optional[int] = _cluster_only(None)
    gpu_shuffle_rmm_pool_size: Optional[int] = _cluster_only(None)
    gpu_shuffle_spill_memory_limit: str = _cluster_only("auto")
    gpu_shuffle_setup_timeout_s: float = _cluster_only(120.0)
    scheduling_strategy: str = _cluster_only("SPREAD")
    scheduling_strategy_large_args: str = _cluster_only("DEFAULT")
    large_args_threshold: int = 50 * 1024 * 1024  # Ray backend: UDF arguments past it are put once
    use_polars: bool = _cluster_only(False)
    use_polars_sort: bool = _cluster_only(False)  # the native sort is the fast path here
    _shuffle_strategy: "ShuffleStrategy" = _cluster_only("hash_shuffle")
    use_legacy_dataset_ids: bool = _cluster_only(False)
    decoding_size_estimation: bool = _cluster_only(True)
    use_datasource_v2: bool = _cluster_only(True)
    parquet_chunker_target_chunk_size: Optional[int] = _cluster_only(None)
    use_arrow_tensor_v2: bool = _cluster_only(True)
    # None or True: values Arrow has no type for become a column of pickled objects; False: raise.
    enable_fallback_to_arrow_object_ext_type: Optional[bool] = None
    trace_allocations: bool = _cluster_only(False)
    use_ray_tqdm: bool = _cluster_only(True)
    enable_rich_progress_bars: bool = _cluster_only(False)
    enable_get_object_locations_for_metrics: bool = _cluster_only(False)
    warn_on_driver_memory_usage_bytes: int = _cluster_only(2 * 1024 * 1024 * 1024)
    actor_task_retry_on_errors: bool = _cluster_only(False)
    actor_init_retry_on_errors: bool = _cluster_only(False)
    actor_init_max_retries: int = _cluster_only(3)
    max_consecutive_actor_init_deaths: int = _cluster_only(0)
    retried_map_errors: bool = _cluster_only(False)
    max_map_retries: int = _cluster_only(3)
    execution_no_progress_timeout_s: int = _cluster_only(1800)
    log_internal_stack_trace: bool = _cluster_only(False)
    s3_try_create_dir: bool = _cluster_only(False)
    wait_for_min_actors_s: int = _cluster_only(-1)
    enable_per_node_metrics: bool = _cluster_only(False)
    override_object_store_memory_limit_fraction: Optional[float] = _cluster_only(None)
    memory_usage_poll_interval_s: int = _cluster_only(1)
    dataset_logger_id: Optional[str] = _cluster_only(None)
    isolate_read_workers: bool = _cluster_only(False)
    enable_dynamic_output_queue_size_backpressure: bool = _cluster_only(False)
    enforce_schemas: bool = _cluster_only(False)
    pandas_block_ignore_metadata: bool = _cluster_only(False)
    enable_arrow_backed_pandas_conversion: bool = _cluster_only(True)
    batch_to_block_arrow_format: bool = _cluster_only(True)
    custom_execution_callback_classes: list = _cluster_only([])
    default_map_logical_memory_enabled: bool = _cluster_only(False)
    # Transient IO errors (substrings or regexes of the message) on which a file read from
    # or written to an object store is tried again, with backoff.
    retried_io_errors: list = field(default_factory=lambda: list(DEFAULT_RETRIED_IO_ERRORS))
    # Deprecated in Ray 2.58 for retried_io_errors, which Ray's writes use instead.
    write_file_retry_on_errors: list = _cluster_only(list(DEFAULT_WRITE_FILE_RETRY_ON_ERRORS))

    _lock = threading.Lock()
    _current = None  # the process-wide instance (not a field)

    @property
    def shuffle_strategy(self) -> "ShuffleStrategy":
        """Ray's choice of how sort/shuffle/repartition move data between nodes. One
        machine has one exchange (sorted runs for sort, random buckets for shuffles, hash
        buckets for keys, spilling past the memory limit), so any of Ray's strategies is
        accepted and runs it."""
        return ShuffleStrategy(self._shuffle_strategy)

    @shuffle_strategy.setter
    def shuffle_strategy(self, value) -> None:
        try:
            value = ShuffleStrategy(value)
        except ValueError:
            raise ValueError(f"DataContext: shuffle_strategy must be one of {[s.value for s in ShuffleStrategy]}, "
                             f"got {value!r}") from None
        object.__setattr__(self, "_shuffle_strategy", value)

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

    @classmethod
    def cluster_only_fields(cls) -> list:
        """Fields accepted for compatibility that have no effect on this engine."""
        return [f.name for f in fields(cls) if f.metadata.get("effective") is False]

    def _to_core(self):
        """The settings the C++ engine reads, as its typed ``_core.DataContext`` (the one
        place the Python context is converted; values are checked here, naming the field)."""
        from millstream import _core

        limits = self.execution_options.resource_limits
        exclude = self.execution_options.exclude_resources
        autoscaling = self.autoscaling_config

        def finite(value):
            return None if value is None or value == float("inf") else value

        def count(name, value, min=0):  # noqa: A002
            return check_int("DataContext", name, value, min=min)

        def amount(name, value, none_ok=False, max=INT64_MAX, positive=False):  # noqa: A002
            value = check_number("DataContext", name, finite(value), none_ok=none_ok, max=max)
            if positive and value is not None and value <= 0:
                raise ValueError(f"DataContext: {name} must be greater than 0, got {value:g}")
            return value

        resource_limits = _core.ExecutionResources(
            cpu=amount("resource_limits.cpu", limits.cpu, none_ok=True, positive=True),
            gpu=amount("resource_limits.gpu", limits.gpu, none_ok=True),
            object_store_memory=None if finite(limits.object_store_memory) is None else
            int(amount("resource_limits.object_store_memory", limits.object_store_memory)))
        exclude_resources = _core.ExecutionResources(
            cpu=amount("exclude_resources.cpu", exclude.cpu or 0),
            gpu=amount("exclude_resources.gpu", exclude.gpu or 0),
            object_store_memory=int(amount("exclude_resources.object_store_memory",
                                           exclude.object_store_memory or 0)))
        return _core.DataContext(
            # None is Ray's "no limit".
            target_max_block_size=INT64_MAX if self.target_max_block_size is None else
            count("target_max_block_size", self.target_max_block_size, min=1),
            target_min_block_size=count("target_min_block_size", self.target_min_block_size),
            read_op_min_num_blocks=count("read_op_min_num_blocks", self.read_op_min_num_blocks),
            execution_options=_core.ExecutionOptions(
                resource_limits=resource_limits, exclude_resources=exclude_resources,
                preserve_order=bool(self.execution_options.preserve_order)),
            op_resource_reservation_enabled=bool(self.op_resource_reservation_enabled),
            op_resource_reservation_ratio=amount("op_resource_reservation_ratio",
                                                 self.op_resource_reservation_ratio, max=1),
            autoscaling_config=_core.AutoscalingConfig(
                actor_pool_util_upscaling_threshold=amount(
                    "autoscaling_config.actor_pool_util_upscaling_threshold",
                    autoscaling.actor_pool_util_upscaling_threshold),
                actor_pool_util_downscaling_threshold=amount(
                    "autoscaling_config.actor_pool_util_downscaling_threshold",
                    autoscaling.actor_pool_util_downscaling_threshold),
                actor_pool_max_upscaling_delta=count("autoscaling_config.actor_pool_max_upscaling_delta",
                                                     autoscaling.actor_pool_max_upscaling_delta, min=1)),
            downstream_capacity_backpressure_ratio=amount("downstream_capacity_backpressure_ratio",
                                                          self.downstream_capacity_backpressure_ratio or 0),
            max_errored_blocks=count("max_errored_blocks", self.max_errored_blocks, min=-1),
        )


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# Constructors name the nearest field for a misspelt keyword, as attribute assignment does.
for _cls in (ExecutionResources, ExecutionOptions, AutoscalingConfig, DataContext):
    _cls.__init__ = public(_cls.__init__, name=_cls.__name__)
