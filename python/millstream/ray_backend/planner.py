"""The Ray planner: a dataset's lineage (``millstream._args.Lineage``, one per public call)
split into stages at its all-to-all steps.

- A file read (``read_parquet``, ``read_csv``...) becomes a read stage: the files listed on
  the driver, grouped into tasks, each task replaying the read on its group.
- A dataset materialized on the cluster (``materialize()`` under this backend) hands on its
  blocks' refs as they are.
- Any other source (``range``, ``from_items``, a dataset materialized locally...) runs on
  the driver with the local engine; its blocks are put in the object store.
- Task-pool maps (``map_batches``, ``filter``, ``with_column``, ``select_columns``...) fuse
  into the stage before them: its tasks replay them after their own step.
- A callable class (``map_batches(Cls, concurrency=...)``) starts an actor stage (Ray actors
  keeping the constructed callable); the maps after it fuse into it.
- ``sort``, ``random_shuffle``, ``repartition(num_blocks)``, ``randomize_block_order``,
  ``groupby(...).aggregate/count/sum/min/max/mean/std`` and ``groupby(...).map_groups``
  with a function (not a callable class, no resource arguments) are exchanges across
  nodes (millstream.ray_backend.exchange); the maps after them fuse into their reduce
  tasks.
- ``join`` is a two-input exchange: both sides (each planned as its own stages) hash-
  partitioned by key into ``num_partitions`` pieces, each reduce task joining its pair of
  partitions with millstream's join; the maps after it fuse into the reduce tasks. When
  one side turns out small (at most min(1/8 of the object store budget, 64 MiB)) and the
  join type needs no unmatched rows of it, it is broadcast instead: a task per block of
  the other side joins that block with the whole small side, nothing exchanged.
- ``union`` streams its inputs' blocks (each input planned as its own stages), no tasks
  of its own; ``zip`` cuts the other inputs' blocks to the first one's row counts and
  zips each block in a task (the maps after it fuse into those tasks).
- ``random_sample`` runs in read or map tasks, each task drawing from the seed and its
  index in the stage. A ``RandomSeedConfig`` (of ``random_sample``, ``random_shuffle``,
  ``randomize_block_order``) becomes an int seed per execution (``execution_seed``).
- ``limit`` is applied by the driver, in order, from the blocks' row counts.
- Anything else (``map_groups`` of a callable class or with resource arguments...) runs on the driver with the local
  engine over the fetched blocks: a fallback that ``explain()`` names.
"""

from __future__ import annotations

import inspect
from typing import List, Optional

# Row-by-block steps that a task can replay on its own blocks.
MAP_METHODS = frozenset({"map_batches", "map", "flat_map", "filter", "add_column", "with_column",
                         "select_columns", "drop_columns", "rename_columns"})
UDF_METHODS = frozenset({"map_batches", "map", "flat_map", "filter"})
EXCHANGES = frozenset({"sort", "random_shuffle", "repartition", "randomize_block_order"})
GROUPED_METHODS = frozenset({"aggregate", "count", "sum", "min", "max", "mean", "std"})

# Keys of a map call that say where its tasks run: given to Ray's .options(), not replayed.
PLACEMENT_KEYS = frozenset({"num_cpus", "num_gpus", "memory", "concurrency", "compute"})
# Ray options of an actor, not of a task, and the other way round.
ACTOR_ONLY = frozenset({"max_restarts", "max_task_retries", "max_concurrency", "lifetime", "namespace",
                        "get_if_exists", "concurrency_groups", "max_pending_calls",
                        "allow_out_of_order_execution", "name"})
TASK_ONLY = frozenset({"max_retries", "retry_exceptions", "max_calls", "num_returns"})


class Op:
    """One public call to replay: ``getattr(dataset, method)(*args, **kwargs)``."""

    def __init__(self, method: str, args: tuple, kwargs: dict):
        self.method, self.args, self.kwargs = method, tuple(args), dict(kwargs)

    @property
    def fn(self):
        if self.args:
            return self.args[0]
        return self.kwargs.get("fn")

    def label(self) -> str:
        from millstream.dataset import _fn_name

        if self.method in UDF_METHODS and self.fn is not None and callable(self.fn):
            return f"{self.method}({_fn_name(self.fn)})"
        if self.method in ("sort", "select_columns", "drop_columns") and self.args:
            return f"{self.method}({self.args[0]!r})"
        return self.method

    def replayed(self) -> "Op":
        """The call as a worker replays it: without the keys that placed it (its task
        already holds the resources)."""
        from millstream._args import RAY_REMOTE_ARGS_WITHOUT_EFFECT

        drop = PLACEMENT_KEYS | RAY_REMOTE_ARGS_WITHOUT_EFFECT | {"ray_remote_args_fn"}
        if self.method not in UDF_METHODS and self.method != "add_column":
            return self
        return Op(self.method, self.args, {k: v for k, v in self.kwargs.items() if k not in drop})

    def remote_args(self) -> dict:
        """Ray options this call asks for (num_cpus, num_gpus, memory, scheduling_strategy...)."""
        from millstream._args import RAY_REMOTE_ARGS_WITHOUT_EFFECT

        out = {}
        for key in ("num_cpus", "num_gpus", "memory"):
            if self.kwargs.get(key) is not None:
                out[key] = self.kwargs[key]
        for key, value in self.kwargs.items():
            if key in RAY_REMOTE_ARGS_WITHOUT_EFFECT or key == "max_concurrency":
                out[key] = value
        return out

    def is_actor_udf(self) -> bool:
        return self.method in UDF_METHODS and inspect.isclass(self.fn)


class Stage:
    """One stage: ``kind`` says how it runs (read, local_source, map, actors, sort, shuffle,
    repartition, randomize, groupby, limit, driver); ``op`` is its defining call (None for
    a map stage), ``ops`` the calls its tasks replay after it."""

    def __init__(self, kind: str, op: Optional[Op] = None, *, source=None, group_op: Optional[Op] = None,
                 inputs: Optional[List["Plan"]] = None):
        self.kind, self.op, self.source, self.group_op = kind, op, source, group_op
        self.inputs: List["Plan"] = inputs or []  # the other inputs' plans (join, union, zip)
        self.ops: List[Op] = []
        self.remote_args: dict = {}

    def fuse(self, op: Op) -> None:
        self.ops.append(op.replayed())
        for key, value in op.remote_args().items():
            if key in ("num_cpus", "num_gpus", "memory"):
                self.remote_args[key] = max(self.remote_args.get(key, 0), value)
            else:
                self.remote_args[key] = value

    def accepts_maps(self) -> bool:
        return self.kind in ("read", "map", "actors", "sort", "shuffle", "repartition", "groupby", "join", "zip")

    def where(self) -> str:
        if self.kind in ("local_source", "driver"):
            return "on the driver (local engine over the fetched blocks; not distributed)"
        if self.kind in ("limit", "randomize", "union", "refs"):
            return "on the driver (row counts and refs only)"
        if self.kind == "actors":
            return f"on a pool of Ray actors{_fmt(self.remote_args)}"
        return f"as Ray tasks{_fmt(self.remote_args)}"

    def describe(self) -> str:
        after = "".join(f"->{op.label()}" for op in self.ops)
        if self.kind == "read":
            name, groups = self.source["name"], self.source["groups"]
            files = sum(len(g) for g in groups)
            return f"{name}[{files} file(s) in {len(groups)} task(s)]{after}"
        if self.kind == "local_source":
            return f"Source[{self.source['label']}]{after}"
        if self.kind == "refs":
            return f"Blocks[{len(self.source['blocks'].bundles)} block(s) materialized on the cluster]"
        if self.kind == "map":
            return f"Map[{after[2:]}]"
        if self.kind == "actors":
            return f"ActorPool[{self.op.label()}]{after}"
        if self.kind == "sort":
            return f"Exchange[sort {self.op.args[0] if self.op.args else self.op.kwargs.get('key')!r}: sampled " \
                   f"boundaries, range-partitioned, millstream sort per partition]{after}"
        if self.kind == "groupby":
            from millstream.ray_backend.exchange import partial_aggregations

            partial = "partial aggregates per block, " if partial_aggregations(self.op) else ""
            step = "map_groups" if self.op.method == "map_groups" else "aggregate"
            return (f"Exchange[groupby {self.group_op.args[0] if self.group_op.args else self.group_op.kwargs.get('key')!r}"
                    f".{self.op.method}: {partial}partitioned by key range, millstream {step} per partition]{after}")
        if self.kind == "join":
            given = join_arguments(self.op)
            return (f"Exchange[join {given['join_type']} on {tuple(given['on'])}: both sides hash-partitioned "
                    f"into {given['num_partitions']}, millstream join per partition; or a broadcast of a "
                    f"small side (at most 64 MiB) to a task per block of the other]{after}")
        if self.kind == "union":
            return f"Union[{1 + len(self.inputs)} inputs]"
        if self.kind == "zip":
            return f"Zip[{1 + len(self.inputs)} inputs: the others cut to the first's blocks]{after}"
        if self.kind == "driver":
            return f"{self.op.label()}{after}"
        return f"Exchange[{self.op.label()}]{after}" if self.kind != "limit" else f"Limit[{self.op.args[0] if self.op.args else self.op.kwargs.get('limit')}]"


def _fmt(remote_args: dict) -> str:
    if not remote_args:
        return ""
    return " (" + ", ".join(f"{k}={v!r}" for k, v in sorted(remote_args.items())) + ")"


class Plan:
    def __init__(self, stages: List[Stage]):
        self.stages = stages

    def explain(self) -> str:
        lines = [f"-------- Ray backend plan: {len(self.stages)} stage(s) --------"]
        self._lines(lines, "")
        return "\n".join(lines) + "\n"

    def _lines(self, lines: List[str], indent: str) -> None:
        for i, stage in enumerate(self.stages):
            lines.append(f"{indent}Stage {i}: {stage.describe()}")
            lines.append(f"{indent}    runs {stage.where()}")
            for k, other in enumerate(stage.inputs):
                lines.append(f"{indent}    input {k + 1}:")
                other._lines(lines, indent + "        ")


SEEDED_METHODS = frozenset({"random_shuffle", "randomize_block_order", "random_sample"})


def execution_seed(node) -> Optional[int]:
    """The int seed (or None: random) one execution of the seeded call ``node`` (a
    Lineage) uses. A ``RandomSeedConfig`` with ``reseed_after_execution`` gives each
    execution of the call its own seed, reproducibly: its seed mixed with the number of
    executions before (counted on the lineage node, as the local engine counts them on
    its plan), so epoch k draws the same rows in every run of the program."""
    from millstream.dataset import RandomSeedConfig

    seed = node.kwargs.get("seed")
    if not isinstance(seed, RandomSeedConfig):
        return seed
    if seed.seed is None:
        return None
    base = seed.seed & 0xFFFFFFFFFFFFFFFF
    if not seed.reseed_after_execution:
        return base
    executions = getattr(node, "executions", 0)
    node.executions = executions + 1
    return _mix64(base ^ _mix64(executions))


def _mix64(x: int) -> int:
    """SplitMix64's finalizer."""
    mask = 0xFFFFFFFFFFFFFFFF
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def _chain(dataset, executing: bool = False):
    """(source lineage, [Op...]) of ``dataset``. ``executing``: for an execution, so a
    seeded call's ``RandomSeedConfig`` becomes this execution's int seed."""
    from millstream._args import Lineage

    node = getattr(dataset, "_lineage", None) or Lineage(None, "", "<local>", (), {}, materialized=dataset)
    chain = []
    while node.materialized is None and node.parent is not None:
        kwargs = node.kwargs
        if executing and node.method in SEEDED_METHODS and "seed" in kwargs:
            kwargs = dict(kwargs, seed=execution_seed(node))
        chain.append(Op(node.method, node.args, kwargs))
        node = node.parent
    chain.reverse()
    return node, chain


def _source_stage(node) -> Stage:
    import importlib

    from millstream import ray_backend

    if type(node.materialized).__name__ == "RefBlocks":  # materialized on the cluster
        return Stage("refs", source={"blocks": node.materialized, "label": "materialized on the cluster"})
    if node.materialized is not None:
        dataset = node.materialized
        if not hasattr(dataset, "_batches"):  # a materialized dataset's engine plan
            from millstream.dataset import MaterializedDataset

            dataset = MaterializedDataset(dataset)
        return Stage("local_source", source={"dataset": dataset, "label": type(dataset).__name__})
    fn = getattr(importlib.import_module(node.module), node.name)
    with ray_backend.local_only():
        dataset = fn(*node.args, **node.kwargs)
    if node.name.startswith("read_") and node.name != "read_datasource":
        groups = _file_groups(dataset)
        if groups is not None:
            return Stage("read", source={"module": node.module, "name": node.name, "args": node.args,
                                         "kwargs": node.kwargs, "groups": groups})
    return Stage("local_source", source={"dataset": dataset, "label": node.name})


def _file_groups(dataset) -> Optional[List[List[str]]]:
    """The read's files in groups of consecutive files, one group per task: about 2 tasks
    per cluster CPU, each of at most 128 MiB where there are many files. A file read on
    its own keeps its hive partition columns (every ``key=value`` directory of its path,
    Ray's rule), so partitioned datasets split like any other. None for no files."""
    import math
    import os

    from millstream import ray_backend

    with ray_backend.local_only():
        files = dataset.input_files()
    if not files:
        return None
    sizes = []
    for f in files:
        try:
            sizes.append(os.path.getsize(f))
        except OSError:
            sizes.append(0)
    cpus = _cluster_cpus()
    tasks = min(len(files), max(2 * cpus, math.ceil(sum(sizes) / (128 << 20))))
    groups, start = [], 0
    for i in range(tasks):
        end = round((i + 1) * len(files) / tasks)
        if end > start:
            groups.append(files[start:end])
        start = end
    return groups


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1))) if ray.is_initialized() else 1


def _task_seed(seed) -> bool:
    """Whether read or map tasks can take ``seed``: an int, None, or a RandomSeedConfig
    (made an int per execution by ``execution_seed``)."""
    from millstream.dataset import RandomSeedConfig

    return seed is None or isinstance(seed, (int, RandomSeedConfig)) and not isinstance(seed, bool)


def _distributed_map_groups(op: Op) -> bool:
    """Whether a ``map_groups`` call runs in the reduce tasks of a key-range exchange: a
    function with no resource or placement arguments (a callable class needs an actor
    pool, which a reduce task does not start; those arguments would go unheeded)."""
    if op.method != "map_groups" or inspect.isclass(op.fn):
        return False
    placed = PLACEMENT_KEYS | {"ray_remote_args_fn", "fn_constructor_args", "fn_constructor_kwargs"}
    known = {"fn", "zero_copy_batch", "batch_format", "fn_args", "fn_kwargs"}
    return all(value is None for key, value in op.kwargs.items() if key in placed or key not in known)


def _exchange_kind(op: Op) -> Optional[str]:
    if op.method == "sort":
        return "sort"
    if op.method == "random_shuffle":
        return "shuffle"
    if op.method == "randomize_block_order":
        return "randomize"
    if op.method == "repartition":
        target = op.args[1] if len(op.args) > 1 else op.kwargs.get("target_num_rows_per_block")
        if target is None:
            return "repartition"
    return None


def join_arguments(op: Op) -> dict:
    """A ``join`` call's arguments by name, with Dataset.join's defaults."""
    import inspect as _inspect

    from millstream.dataset import Dataset

    bound = _inspect.signature(Dataset.join).bind(None, *op.args, **op.kwargs)
    bound.apply_defaults()
    given = dict(bound.arguments)
    given.pop("self")
    given["on"] = [given["on"]] if isinstance(given["on"], str) else list(given["on"])
    right_on = given.get("right_on")
    given["right_on"] = given["on"] if right_on is None else ([right_on] if isinstance(right_on, str) else list(right_on))
    return given


def plan(dataset, executing: bool = False) -> Plan:
    """The stages of ``dataset`` on Ray (see the module doc); ``executing``: for an
    execution (not ``explain()``), which resolves seeds (see ``execution_seed``)."""
    node, chain = _chain(dataset, executing)
    stages = [_source_stage(node)]
    i = 0
    while i < len(chain):
        op = chain[i]
        last = stages[-1]
        if op.method in MAP_METHODS and not op.is_actor_udf():
            if not last.accepts_maps():
                last = Stage("map")
                stages.append(last)
            last.fuse(op)
        elif op.is_actor_udf():
            stage = Stage("actors", op)
            stage.remote_args = {k: v for k, v in op.remote_args().items()}
            stages.append(stage)
        elif _exchange_kind(op) is not None:
            stages.append(Stage(_exchange_kind(op), op))
        elif op.method == "limit":
            stages.append(Stage("limit", op))
        elif op.method == "random_sample" and _task_seed(op.kwargs.get("seed")):
            # Per block, in read or map tasks that know their index (to reseed it per task).
            if last.kind not in ("read", "map", "local_source"):
                last = Stage("map")
                stages.append(last)
            last.fuse(op)
        elif op.method == "join":
            stages.append(Stage("join", op, inputs=[plan(join_arguments(op)["ds"], executing)]))
        elif op.method in ("union", "zip") and op.args and not op.kwargs:
            stages.append(Stage(op.method, op, inputs=[plan(other, executing) for other in op.args]))
        elif (op.method == "groupby" and i + 1 < len(chain)
              and (chain[i + 1].method in GROUPED_METHODS or _distributed_map_groups(chain[i + 1]))):
            stages.append(Stage("groupby", chain[i + 1], group_op=op))
            i += 1
        elif op.method == "groupby" and i + 1 < len(chain):
            stages.append(Stage("driver", chain[i + 1], group_op=op))
            i += 1
        else:
            stages.append(Stage("driver", op))
        i += 1
    return Plan(stages)
