"""The driver-side coordinator: runs a plan's stages on Ray and streams their blocks.

Each stage is a generator of ``Bundle``s (an object ref to one block, with its rows and
bytes) pulled by the next one, so nothing runs ahead of the consumer: a stage keeps at most
as many tasks in flight as the cluster has CPUs (for its tasks' ``num_cpus``), fewer when
their expected output would pass the memory limit (``DataContext.execution_options.
resource_limits.object_store_memory``, else half the cluster's object store), and hands
on each output as it finishes (in task order when the order matters). Exchanges wait for
their whole input, then stream their reduce tasks' outputs in partition order.
"""

from __future__ import annotations

import collections
import copy
import itertools
import math
import threading
import time
import uuid
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa

from millstream import _core, _files
from millstream.ray_backend import exchange, planner, stages
from millstream.ray_backend.stages import remote


class Bundle:
    __slots__ = ("ref", "rows", "bytes")

    def __init__(self, ref, rows: int, nbytes: int):
        self.ref, self.rows, self.bytes = ref, rows, nbytes


def require_ray():
    """Ray, initialized by the user; a clear error otherwise (a cluster is never started here)."""
    try:
        import ray
    except ImportError:
        raise ImportError("DataContext.execution_backend = 'ray' needs the 'ray' package "
                          "(pip install ray), or set execution_backend = 'local'") from None
    if not ray.is_initialized():
        raise RuntimeError("DataContext.execution_backend is 'ray' (or MILLSTREAM_BACKEND=ray) but Ray is "
                           "not initialized: call ray.init(address=...) first (millstream never starts a "
                           "cluster itself), or set execution_backend = 'local'")
    return ray


def _task_options(remote_args: dict, actor: bool = False) -> dict:
    skip = planner.TASK_ONLY if actor else planner.ACTOR_ONLY
    return {k: v for k, v in remote_args.items() if k not in skip}


class _Counters:
    def __init__(self, plan):
        self.lock = threading.Lock()
        self.stages = [{"name": s.describe(), "where": s.where(), "tasks": 0, "rows": 0, "bytes": 0,
                        "notes": {}} for s in plan.stages]
        self.started = time.perf_counter()

    def task(self, stage: int, n: int = 1):
        with self.lock:
            self.stages[stage]["tasks"] += n

    def note(self, stage: int, key: str, text: str):
        """What a stage chose as it ran (a join's broadcast, an actor pool's last resize),
        shown by stats(); a later note of the same key replaces it."""
        with self.lock:
            self.stages[stage]["notes"][key] = text

    def out(self, stage: int, bundle: Bundle):
        with self.lock:
            self.stages[stage]["rows"] += bundle.rows
            self.stages[stage]["bytes"] += bundle.bytes

    def text(self) -> str:
        with self.lock:
            lines = [f"Stage {i} {s['name']}: {s['tasks']} task(s), {s['rows']} rows, {s['bytes']} bytes out; "
                     f"ran {s['where']}" + "".join(f"; {n}" for n in s["notes"].values())
                     for i, s in enumerate(self.stages)]
        wall = time.perf_counter() - self.started
        return "\n".join(lines) + f"\nRay backend: {len(self.stages)} stage(s), {wall:.2f} s wall\n"


class Runner:
    """Runs one plan: ``bundles()`` streams the last stage's output."""

    def __init__(self, plan: planner.Plan, ordered: bool, sink=None):
        from millstream.context import DataContext

        self.ray = require_ray()
        self.plan = plan
        self.ordered = ordered or any(s.kind == "limit" for s in plan.stages)
        self.context = copy.copy(DataContext.get_current())
        self.cancelled = False
        self.actors: list = []
        resources = self.ray.cluster_resources()
        self.cpus = max(1, int(resources.get("CPU", 1)))
        limit = self.context.execution_options.resource_limits.object_store_memory
        if limit is None or limit == float("inf"):
            limit = 0.5 * resources.get("object_store_memory", 1 << 30)
        self.max_bytes = max(1, int(limit))
        self.counters = _Counters(plan)
        self.children: list = []  # runners of the other inputs of joins, unions and zips
        locality = self.context.execution_options.locality_with_output
        if locality is True:
            self.output_nodes = [self.ray.get_runtime_context().get_node_id()]
        elif isinstance(locality, (list, tuple)) and locality:
            self.output_nodes = [str(n) for n in locality]
        else:
            self.output_nodes = []
        self._next_output_node = itertools.count()
        self._large_args: dict = {}  # id(argument) -> (the argument, its ref or None)
        if sink is not None:
            last = plan.stages[-1]
            if not last.accepts_maps():
                plan.stages.append(planner.Stage("map"))
                self.counters = _Counters(plan)
            plan.stages[-1].sink = sink
        self.context_ref = self.ray.put(self.context)

    def _remote(self, fn, **options):
        """``fn`` as a Ray remote with ``options``; under ``locality_with_output`` placed
        (softly) on the driver's node, or in turn on the nodes it lists, unless the call
        has a scheduling strategy of its own."""
        if self.output_nodes and "scheduling_strategy" not in options:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = self.output_nodes[next(self._next_output_node) % len(self.output_nodes)]
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
        return remote(fn, **options)

    def _arg(self, value):
        """A task argument: ``value`` itself, or, once it pickles to more than
        ``DataContext.large_args_threshold`` bytes (a UDF holding a model, say), a ref to
        one copy put in the object store, which Ray hands to the task as the value."""
        key = id(value)
        if key not in self._large_args:
            size = len(self.ray.cloudpickle.dumps(value))
            self._large_args[key] = (value, self.ray.put(value) if size > self.context.large_args_threshold else None)
        kept, ref = self._large_args[key]
        return value if ref is None else ref

    def _child(self, plan: planner.Plan) -> "Runner":
        """A runner of another input's plan, sharing this one's cluster, context, actors
        and cancellation."""
        child = Runner.__new__(Runner)
        child.__dict__.update(self.__dict__)
        child.plan, child.counters, child.children = plan, _Counters(plan), []
        child.ordered = self.ordered or any(s.kind == "limit" for s in plan.stages)
        self.children.append(child)
        return child

    @property
    def cancelled(self) -> bool:
        return self._flags["cancelled"]

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        self.__dict__.setdefault("_flags", {})["cancelled"] = value

    # ---- the window of tasks in flight ------------------------------------------------

    def _stream(self, index: int, submits: Iterator[Callable], max_tasks, ordered: bool,
                on_done: Optional[Callable] = None) -> Iterator[Bundle]:
        ray = self.ray
        pending = collections.deque()  # (table_ref, meta_ref, token)
        average = None
        exhausted = False
        try:
            while True:
                most = max_tasks() if callable(max_tasks) else max_tasks
                limit = most if not average else max(1, min(most, self.max_bytes // max(1, average)))
                while not exhausted and len(pending) < limit and not self.cancelled:
                    submit = next(submits, None)
                    if submit is None:
                        exhausted = True
                        break
                    pending.append(submit())
                    self.counters.task(index)
                if not pending:
                    return
                if ordered:
                    entry = pending.popleft()
                else:
                    ready, _ = ray.wait([e[1] for e in pending], num_returns=1)
                    entry = next(e for e in pending if e[1] == ready[0])
                    pending.remove(entry)
                info = ray.get(entry[1])
                if on_done is not None:
                    on_done(entry[2])
                bundle = Bundle(entry[0], info["rows"], info["bytes"])
                average = bundle.bytes if average is None else (average + bundle.bytes) // 2
                self.counters.out(index, bundle)
                yield bundle
        finally:
            pending.clear()  # tasks still running are left to finish; their outputs are dropped

    def _max_tasks(self, stage) -> int:
        cpus = stage.remote_args.get("num_cpus", 1) or 0
        return max(1, int(self.cpus / cpus)) if cpus else self.cpus

    # ---- stages -----------------------------------------------------------------------

    def bundles(self) -> Iterator[Bundle]:
        stream = None
        for index, stage in enumerate(self.plan.stages):
            stream = getattr(self, f"_run_{stage.kind}")(index, stage, stream)
        return stream

    def _sink(self, stage):
        return getattr(stage, "sink", None)

    def _task_sink(self, stage, task: int):
        """The stage's write as task ``task`` of the write makes it: with a
        ``filename_provider``, its files are named for the write's uuid and this index."""
        sink = self._sink(stage)
        if sink is None or not isinstance(sink[2].get("filename_provider"), _files.TaskNames):
            return sink
        fmt, path, kwargs = sink
        return fmt, path, dict(kwargs, filename_provider=kwargs["filename_provider"].for_task(task))

    def _run_read(self, index, stage, _):
        source = {k: stage.source[k] for k in ("module", "name", "args", "kwargs")}
        options = dict(_task_options(stage.remote_args), num_returns=2)
        ops = self._arg(stage.ops)
        submits = (lambda g=g, i=i: (*self._remote(stages.read_task, **options).remote(
            self.context_ref, source, g, ops, self._task_sink(stage, i), i), None)
                   for i, g in enumerate(stage.source["groups"]))
        return self._stream(index, submits, self._max_tasks(stage), self.ordered)

    def _run_local_source(self, index, stage, _):
        from millstream import ray_backend

        def blocks():
            with ray_backend.local_only():
                dataset = stage.source["dataset"]
                tables = [pa.Table.from_batches([b]) for b in dataset._batches(None, ordered=True)]
                if not tables:  # one empty block, so that the stages after know the schema
                    schema = dataset.schema()
                    tables = [schema.base_schema.empty_table()] if schema is not None else []
            for table in tables:
                bundle = Bundle(self.ray.put(table), table.num_rows, table.nbytes)
                self.counters.out(index, bundle)
                yield bundle

        if stage.ops or self._sink(stage):  # maps fused into a source stage: run them as tasks
            mapped = planner.Stage("map")
            mapped.ops, mapped.remote_args = stage.ops, stage.remote_args
            mapped.sink = self._sink(stage)
            return self._run_map(index, mapped, blocks())
        return blocks()

    def _run_refs(self, index, stage, _):
        def run():
            for bundle in stage.source["blocks"].bundles:
                self.counters.out(index, bundle)
                yield bundle
        return run()

    def _run_map(self, index, stage, upstream):
        options = dict(_task_options(stage.remote_args), num_returns=2)
        ops = self._arg(stage.ops)
        submits = (lambda b=b, i=i: (*self._remote(stages.map_task, **options).remote(
            self.context_ref, ops, self._task_sink(stage, i), i, b.ref), None)
                   for i, b in enumerate(upstream))
        return self._stream(index, submits, self._max_tasks(stage), self.ordered)

    def _run_actors(self, index, stage, upstream):
        """An actor pool of ``min`` actors, growing to ``max`` (and what the cluster's CPUs
        allow) for a ``(min, max)`` concurrency by ``DataContext.autoscaling_config``'s
        rules: utilization is the calls in flight (one more block about to go) over
        actors x ``max_tasks_in_flight_per_actor``; when every actor has a call and it
        reaches the upscaling threshold, up to ``actor_pool_max_upscaling_delta`` actors
        start; an actor that has answered calls and has none left is retired when it falls
        to the downscaling threshold (never below ``min``). While the pool can grow, calls
        queue at the actors up to the upscaling threshold; at its size, up to
        ``max_tasks_in_flight_per_actor`` each. Each block goes to the least loaded actor
        (on its node, with locality)."""
        from millstream.dataset import _compute

        op = stage.op
        _, lo, hi = _compute(op.fn, op.kwargs.get("concurrency"), op.kwargs.get("compute"))
        cpus = stage.remote_args.get("num_cpus", 1) or 0
        room = max(1, int(self.cpus / cpus)) if cpus else self.cpus
        least = max(lo, 1)
        most = max(least, min(hi or room, room))
        options = _task_options(stage.remote_args, actor=True)
        op_arg, ops_arg = self._arg(op), self._arg(stage.ops)
        scaling = self.context.autoscaling_config
        up_at = scaling.actor_pool_util_upscaling_threshold
        down_at = scaling.actor_pool_util_downscaling_threshold
        per_actor = self.context.max_tasks_in_flight_per_actor or 2
        actors, nodes, node_refs, load = [], [], [], []
        live: set = set()  # indices of the actors not retired

        def start():
            actor = self._remote(stages.PoolActor, **options).remote(self.context_ref, op_arg, ops_arg)
            live.add(len(actors))
            actors.append(actor)
            self.actors.append(actor)
            node_refs.append(actor.ready.remote())  # its node id, once constructed
            nodes.append(None)
            load.append(0)

        for _ in range(least):
            start()
        nodes[:] = self.ray.get(node_refs)  # the first ones constructed before any call
        calls = itertools.count()  # the write's task index of each call
        locality = self.context.execution_options.actor_locality_enabled
        from ray.experimental import get_object_locations

        def node_of(k):
            if nodes[k] is None:
                ready, _ = self.ray.wait([node_refs[k]], timeout=0)
                if ready:
                    nodes[k] = self.ray.get(ready[0])
            return nodes[k]

        def in_flight() -> int:
            return sum(load[k] for k in live)

        def submit(bundle):
            n = len(live)
            if (n < most and all(load[k] for k in live)
                    and (in_flight() + 1) / (n * per_actor) >= up_at):
                for _ in range(min(max(1, scaling.actor_pool_max_upscaling_delta), most - n)):
                    start()
                self.counters.note(index, "grown", f"scaled up to {len(live)} actor(s) of at most {most}")
            i = min(live, key=lambda k: load[k])
            if locality and len({node_of(k) for k in live} - {None}) > 1:
                # an actor with room on a node holding the block, if any
                where = set((get_object_locations([bundle.ref]).get(bundle.ref) or {}).get("node_ids") or ())
                here = [k for k in live if load[k] < per_actor and node_of(k) in where]
                if here:
                    i = min(here, key=lambda k: load[k])
            load[i] += 1
            table_ref, meta_ref = actors[i].run.options(num_returns=2).remote(
                self._task_sink(stage, next(calls)), bundle.ref)
            return table_ref, meta_ref, i

        def done(i):
            load[i] -= 1  # it answered a call
            if (len(live) > least and load[i] == 0 and i in live
                    and in_flight() / (len(live) * per_actor) <= down_at):
                live.discard(i)  # retired: it takes no more calls
                self.ray.kill(actors[i])
                self.counters.note(index, "shrunk", f"scaled down to {len(live)} actor(s)")

        def window() -> int:
            # Calls may queue at the actors while the pool can still grow (the upscaling
            # threshold's utilization), else at most max_tasks_in_flight_per_actor each.
            n = len(live)
            return n * per_actor if n >= most else max(n * per_actor, math.ceil(n * per_actor * up_at))

        def run():
            try:
                yield from self._stream(index, ((lambda b=b: submit(b)) for b in upstream),
                                        window, self.ordered, done)
            finally:
                for k in live:
                    self.ray.kill(actors[k])

        return run()

    def _reduce(self, index, stage, reduce_fn, args_for, n):
        """Reduce tasks 0..n-1 in order, each ``reduce_fn(context, *args_for(j), ops, sink, *parts)``."""
        ops = self._arg(stage.ops)
        submits = (lambda j=j: (*self._remote(reduce_fn, num_returns=2).remote(
            self.context_ref, *args_for(j)[0], ops, self._task_sink(stage, j), *args_for(j)[1]), None)
            for j in range(n))
        return self._stream(index, submits, self.cpus, True)

    def _partition(self, inputs, fn, n, *args):
        """Map tasks: each input split into n pieces; pieces[i][j] is input i's part j."""
        out = []
        for b in inputs:
            refs = self._remote(fn, num_returns=n).remote(b.ref, *args)
            out.append(refs if n > 1 else [refs])
        return out

    def _run_sort(self, index, stage, upstream):
        def run():
            inputs = [b for b in upstream]
            if not inputs:
                return
            op = stage.op
            names = ("key", "descending", "boundaries")
            given = dict(zip(names, op.args), **op.kwargs)
            key, descending = given.get("key"), given.get("descending", False)
            first = key if isinstance(key, str) else key[0]
            first_desc = descending if isinstance(descending, bool) else descending[0]
            if given.get("boundaries") is not None:
                bounds = list(given["boundaries"])
            else:
                samples = self.ray.get([self._remote(exchange.sample).remote(b.ref, first) for b in inputs])
                bounds = exchange.boundaries(samples, len(inputs))
            n = len(bounds) + 1
            invalid_to = 0 if first_desc else n - 1
            pieces = self._partition(inputs, exchange.range_partition, n, first, bounds, n, invalid_to)
            self.counters.task(index, len(inputs))
            order = list(range(n))[::-1] if first_desc else list(range(n))
            args = ((key,), {"descending": descending})
            yield from self._reduce(index, stage, exchange.reduce_sort,
                                    lambda j: ((args[0], args[1]), [p[order[j]] for p in pieces]), n)
        return run()

    def _run_groupby(self, index, stage, upstream):
        def run():
            inputs = [b for b in upstream]
            group = dict(zip(("key", "num_partitions"), stage.group_op.args), **stage.group_op.kwargs)
            key = group.get("key")
            if not inputs:
                return
            keys = [] if key is None else ([key] if isinstance(key, str) else list(key))
            first = keys[0] if keys else None
            op = stage.op
            partial = exchange.partial_aggregations(op) if any(b.rows for b in inputs) else None
            if partial is not None:
                inputs = [b for b in inputs if b.rows]
                # Map side: each block's groups aggregated into partial rows (and their keys
                # sampled); the reduce side merges the partial rows of its key range.
                aggs, merges = partial
                refs = [self._remote(exchange.partial_task, num_returns=2).remote(
                    self.context_ref, stage.group_op, aggs, first, b.ref) for b in inputs]
                self.counters.task(index, len(inputs))
                blocks = [r[0] for r in refs]
                samples = self.ray.get([r[1] for r in refs]) if keys else []
                op = planner.Op("aggregate", tuple(merges), {})
            else:
                blocks = [b.ref for b in inputs]
                samples = self.ray.get([self._remote(exchange.sample).remote(r, first) for r in blocks]) if keys else []
            if not keys:
                yield from self._reduce(index, stage, exchange.reduce_groupby,
                                        lambda j: ((stage.group_op, op), blocks), 1)
                return
            n = group.get("num_partitions") or len(inputs)
            bounds = exchange.boundaries(samples, n)
            n = len(bounds) + 1
            pieces = []
            for ref in blocks:
                parts = self._remote(exchange.range_partition, num_returns=n).remote(ref, first, bounds, n, n - 1)
                pieces.append(parts if n > 1 else [parts])
            self.counters.task(index, len(inputs))
            yield from self._reduce(index, stage, exchange.reduce_groupby,
                                    lambda j: ((stage.group_op, op), [p[j] for p in pieces]), n)
        return run()

    def _shuffle(self, index, stage, inputs, n, seed):
        pieces = [self._partition([b], exchange.random_partition, n, n, seed, i)[0] for i, b in enumerate(inputs)]
        self.counters.task(index, len(inputs))
        return self._reduce(index, stage, exchange.reduce_shuffle, lambda j: ((seed, j), [p[j] for p in pieces]), n)

    def _run_shuffle(self, index, stage, upstream):
        def run():
            inputs = [b for b in upstream]
            if not inputs:
                return
            n = stage.op.kwargs.get("num_blocks") or len(inputs)
            yield from self._shuffle(index, stage, inputs, n, stage.op.kwargs.get("seed"))
        return run()

    def _run_repartition(self, index, stage, upstream):
        def run():
            inputs = [b for b in upstream]
            given = dict(zip(("num_blocks", "target_num_rows_per_block"), stage.op.args), **stage.op.kwargs)
            n = given["num_blocks"]
            if not inputs:
                return
            if given.get("shuffle"):
                yield from self._shuffle(index, stage, inputs, n, None)
                return
            keys = given.get("keys")
            if keys:
                keys = [keys] if isinstance(keys, str) else list(keys)
                pieces = self._partition(inputs, exchange.hash_partition, n, keys, n)
                self.counters.task(index, len(inputs))
                sort_keys = keys if given.get("sort") else None
                yield from self._reduce(index, stage, exchange.reduce_concat,
                                        lambda j: ((sort_keys,), [p[j] for p in pieces]), n)
                return
            plans = exchange.row_plan([b.rows for b in inputs], n)

            def args_for(j):
                used = sorted({i for i, _, _ in plans[j]}) or [0]
                local = {i: k for k, i in enumerate(used)}
                return ([[(local[i], o, c) for i, o, c in plans[j]]], [inputs[i].ref for i in used])

            yield from self._reduce(index, stage, exchange.slices, args_for, n)
        return run()

    def _run_randomize(self, index, stage, upstream):
        def run():
            inputs = [b for b in upstream]
            rng = np.random.default_rng(stage.op.kwargs.get("seed"))
            for i in rng.permutation(len(inputs)):
                self.counters.out(index, inputs[i])
                yield inputs[i]
        return run()

    def _run_limit(self, index, stage, upstream):
        def run():
            left = stage.op.args[0] if stage.op.args else stage.op.kwargs["limit"]
            for b in upstream:
                if left <= 0:
                    break
                if b.rows > left:
                    ref, info = self._remote(stages.slice_task, num_returns=2).remote(b.ref, 0, left)
                    b = Bundle(ref, left, self.ray.get(info)["bytes"])
                left -= b.rows
                self.counters.out(index, b)
                yield b
        return run()

    # Join types whose output for one block of the other side needs only that block and
    # the whole small side (no unmatched rows of the small side to find across blocks).
    BROADCAST_RIGHT = ("inner", "left_outer", "left_semi", "left_anti")
    BROADCAST_LEFT = ("inner", "right_outer", "right_semi", "right_anti")
    BROADCAST_MAX_BYTES = 64 << 20  # as the local engine's cap (exec/operators/operators.h)

    def _broadcast_cap(self) -> int:
        """The most bytes a join's small side may take to be broadcast: min(1/8 of the
        object store budget, 64 MiB), as the local engine caps it by its memory limit."""
        return min(self.BROADCAST_MAX_BYTES, self.max_bytes // 8)

    def _broadcast(self, index, stage, kwargs, build_side, build, probe):
        """A broadcast join: one task per block of ``probe`` (streamed), each joining it
        with every block of the small side ``build`` (refs: Ray keeps one copy per node)."""
        ops = self._arg(stage.ops)
        refs = [b.ref for b in build]
        self.counters.note(index, "join", f"broadcast, build={build_side} ({sum(b.bytes for b in build)} bytes)")
        submits = ((lambda i=i, b=b: (*self._remote(exchange.broadcast_join, num_returns=2).remote(
            self.context_ref, kwargs, build_side, ops, self._task_sink(stage, i), b.ref, *refs), None))
            for i, b in enumerate(probe))
        return self._stream(index, submits, self.cpus, self.ordered)

    def _run_join(self, index, stage, upstream):
        def run():
            given = planner.join_arguments(stage.op)
            kwargs = {k: v for k, v in given.items() if k not in ("ds", "num_partitions")}
            cap = self._broadcast_cap()
            right = list(self._child(stage.inputs[0]).bundles() or ())
            lefts = iter(upstream or ())
            first = next(lefts, None)  # a left side without blocks goes to the driver below
            if (first is not None and right and given["join_type"] in self.BROADCAST_RIGHT
                    and sum(b.bytes for b in right) <= cap):
                yield from self._broadcast(index, stage, kwargs, "right", right,
                                           itertools.chain([first], lefts))
                return
            left = [first, *lefts] if first is not None else []
            if (left and right and given["join_type"] in self.BROADCAST_LEFT
                    and sum(b.bytes for b in left) <= cap):
                yield from self._broadcast(index, stage, kwargs, "left", left, iter(right))
                return
            if not left or not right:  # a side without blocks: nothing to partition
                yield from self._run_driver(index, stage, iter(left), right=right)
                return
            n = max(1, int(given["num_partitions"]))
            left_pieces = self._partition(left, exchange.hash_partition, n, given["on"], n)
            right_pieces = self._partition(right, exchange.hash_partition, n, given["right_on"], n)
            self.counters.task(index, len(left) + len(right))
            yield from self._reduce(index, stage, exchange.reduce_join,
                                    lambda j: ((kwargs, len(left)), [p[j] for p in left_pieces] +
                                               [p[j] for p in right_pieces]), n)
        return run()

    def _run_union(self, index, stage, upstream):
        def run():
            streams = [upstream] + [self._child(p).bundles() or iter(()) for p in stage.inputs]
            if self.ordered:  # all of the first, then each other in turn
                streams = [b for s in streams for b in s]
                for bundle in streams:
                    self.counters.out(index, bundle)
                    yield bundle
                return
            live = list(streams)
            while live:  # one block of each in turn: every input's tasks stay in flight
                for s in list(live):
                    bundle = next(s, None)
                    if bundle is None:
                        live.remove(s)
                        continue
                    self.counters.out(index, bundle)
                    yield bundle
        return run()

    def _run_zip(self, index, stage, upstream):
        def run():
            first = list(upstream)
            others = [list(self._child(p).bundles() or ()) for p in stage.inputs]
            totals = [sum(b.rows for b in first)] + [sum(b.rows for b in o) for o in others]
            if len(set(totals)) > 1 or not first or not all(others):  # the local zip says what is wrong
                yield from self._run_driver(index, stage, iter(first), others=others)
                return
            sizes = [b.rows for b in first]
            cuts = [exchange.row_pieces([b.rows for b in o], sizes) for o in others]
            ops = self._arg(stage.ops)

            def submit(j):
                plans, counts, refs = [], [], []
                for o, cut in zip(others, cuts):
                    used = sorted({i for i, _, _ in cut[j]}) or [0]
                    local = {i: k for k, i in enumerate(used)}
                    plans.append([(local[i], off, c) for i, off, c in cut[j]])
                    counts.append(len(used))
                    refs.extend(o[i].ref for i in used)
                return (*self._remote(exchange.zip_task, num_returns=2).remote(
                    self.context_ref, plans, counts, ops, self._task_sink(stage, j), first[j].ref, *refs), None)

            yield from self._stream(index, ((lambda j=j: submit(j)) for j in range(len(first))),
                                    self.cpus, self.ordered)
        return run()

    def _run_driver(self, index, stage, upstream, right=None, others=None):
        from millstream import ray_backend

        def fetched(bundles):
            return stages.from_tables(self.ray.get([b.ref for b in bundles]) or [pa.table({})])

        def run():
            tables = self.ray.get([b.ref for b in upstream])
            op = stage.op
            with ray_backend.local_only():
                dataset = stages.from_tables(tables)
                if stage.group_op is not None:
                    dataset = getattr(dataset, stage.group_op.method)(*stage.group_op.args, **stage.group_op.kwargs)
                if right is not None:  # a join with a side that made no blocks
                    given = planner.join_arguments(op)
                    given["ds"] = fetched(right)
                    op = planner.Op("join", (), given)
                elif others is not None:  # a zip the local engine checks and runs
                    op = planner.Op("zip", tuple(fetched(o) for o in others), {})
                dataset = stages.replay(dataset, [op])
                batches = list(dataset._batches(None, ordered=True))
            for batch in batches:
                table = pa.Table.from_batches([batch])
                bundle = Bundle(self.ray.put(table), table.num_rows, table.nbytes)
                self.counters.out(index, bundle)
                yield bundle

        if stage.ops or self._sink(stage):
            mapped = planner.Stage("map")
            mapped.ops, mapped.remote_args, mapped.sink = stage.ops, stage.remote_args, self._sink(stage)
            return self._run_map(index, mapped, run())
        return run()

    def close(self):
        self.cancelled = True
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass


class _RayStats(_core.ExecutionStats):
    """The counters of an execution on Ray: its wall time and the stages' text (per-operator
    counters live on the cluster, so ``operators`` is empty)."""

    def __init__(self, text: str, wall_s: float):
        super().__init__(wall_s=wall_s)
        self._text = text

    def to_string(self) -> str:
        return self._text


class RayExecution:
    """An execution on Ray with the local engine's iterator interface: ``next()`` (a
    RecordBatch, None at the end), ``drain()``, ``stats()``, ``cancel()``, ``close()``."""

    def __init__(self, dataset, batch_size=None, drop_last=False, ordered=False, keep_empty=False, sink=None):
        from millstream.context import DataContext

        ordered = ordered or bool(DataContext.get_current().execution_options.preserve_order)
        self._runner = Runner(planner.plan(dataset, executing=True), ordered, sink)
        self._batch_size, self._drop_last, self._keep_empty = batch_size, drop_last, keep_empty
        self._it = self._batches()

    def _tables(self) -> Iterator[pa.Table]:
        for bundle in self._runner.bundles() or ():
            if self._runner.cancelled:
                return
            if bundle.rows == 0 and not self._keep_empty:
                continue
            yield self._runner.ray.get(bundle.ref)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        if self._batch_size is None:
            for table in self._tables():
                yield _one_batch(table)
            return
        pending, rows = [], 0
        for table in self._tables():
            pending.append(table)
            rows += table.num_rows
            while rows >= self._batch_size:
                whole = pa.concat_tables(pending, promote_options="default")
                yield _one_batch(whole.slice(0, self._batch_size))
                rest = whole.slice(self._batch_size)
                pending, rows = [rest], rest.num_rows
        if rows and not self._drop_last:
            yield _one_batch(pa.concat_tables(pending, promote_options="default"))

    def next(self) -> Optional[pa.RecordBatch]:
        return next(self._it, None)

    def drain(self) -> int:
        return sum(b.num_rows for b in iter(self.next, None))

    def stats(self) -> "_RayStats":
        def text_of(runner, indent=""):
            own = "".join(indent + line + "\n" for line in runner.counters.text().splitlines())
            return own + "".join(text_of(c, indent + "    (other input) ") for c in runner.children)

        return _RayStats(text_of(self._runner), time.perf_counter() - self._runner.counters.started)

    def cancel(self) -> None:
        self._runner.cancelled = True

    def close(self) -> None:
        self._it.close()
        self._runner.close()


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    table = table.combine_chunks()
    batches = table.to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_pylist([], schema=table.schema) if not batches else \
        pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


class RefBlocks:
    """The blocks of a dataset materialized on the cluster: object refs with their rows and
    bytes, and the schema. A Ray plan starting from them hands them on as they are."""

    def __init__(self, bundles, schema: pa.Schema):
        self.bundles, self.schema = list(bundles), schema


class _RefsDatasource:
    """RefBlocks as a Datasource: what the local engine reads when it runs such a dataset
    (its blocks fetched one task at a time)."""

    def __init__(self, blocks: RefBlocks):
        self._blocks = blocks

    def get_name(self) -> str:
        return "RayObjectRefs"

    def estimate_inmemory_data_size(self):
        return sum(b.bytes for b in self._blocks.bundles)

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        from millstream.datasource import BlockMetadata, ReadTask

        def read(ref):
            import ray

            return [ray.get(ref)]

        return [ReadTask(lambda ref=b.ref: read(ref), BlockMetadata(num_rows=b.rows, size_bytes=b.bytes),
                         schema=self._blocks.schema) for b in self._blocks.bundles]


def materialize(dataset):
    """``dataset`` run on the cluster; the result holds refs to its blocks (kept in the
    object store, empty ones included) and only their rows and bytes on the driver."""
    from millstream import ray_backend
    from millstream.dataset import MaterializedDataset

    execution = RayExecution(dataset, ordered=True, keep_empty=True)
    try:
        bundles = list(execution._runner.bundles() or ())
    finally:
        dataset._last_stats = execution.stats()
        execution.close()
    if bundles:
        schema = execution._runner.ray.get(bundles[0].ref).schema
    else:
        with ray_backend.local_only():
            known = dataset.schema()
        schema = known.base_schema if known is not None else pa.schema([])
    blocks = RefBlocks(bundles, schema)
    with ray_backend.local_only():
        from millstream.read_api import read_datasource

        core = read_datasource(_RefsDatasource(blocks), override_num_blocks=max(1, len(bundles)))._core
    return RayMaterializedDataset(core, blocks, dataset._last_stats)


def _materialized_class():
    from millstream.dataset import MaterializedDataset

    return MaterializedDataset


class RayMaterializedDataset(_materialized_class()):
    """A MaterializedDataset whose blocks stay in the Ray object store (see
    ``materialize``): its counts come from the blocks' metadata; reading its rows fetches
    them (under the local backend too)."""

    def __init__(self, core, blocks: RefBlocks, stats=None):
        from millstream._args import Lineage

        super().__init__(core)
        self._ref_blocks = blocks
        self._last_stats = stats
        self._lineage = Lineage(None, __name__, "materialize", (), {}, materialized=blocks)

    def num_blocks(self) -> int:
        return len(self._ref_blocks.bundles)

    def size_bytes(self) -> int:
        return sum(b.bytes for b in self._ref_blocks.bundles)

    def count(self) -> int:
        return sum(b.rows for b in self._ref_blocks.bundles)

    def schema(self, fetch_if_missing: bool = True):
        from millstream.dataset import Schema

        return Schema(self._ref_blocks.schema)


def write(dataset, path, fmt, *, mode, partition_cols, filename_provider, min_rows_per_file,
          max_rows_per_file, num_rows_per_file, arrow_open_stream_args, options, filesystem) -> None:
    """``write_<fmt>`` on Ray: the last stage's tasks write their output's files into
    ``path`` (created, emptied or refused per ``mode`` on the driver first): a directory
    every node sees, or an object store (``s3://``, ``gs://``, ``filesystem=``) that the
    tasks upload to themselves."""
    import logging
    import os

    from millstream import _core, _files

    fn_name = f"write_{fmt}"
    _files.filename_provider(fn_name, filename_provider)
    require_ray()
    kwargs = dict(mode="append", partition_cols=partition_cols, min_rows_per_file=min_rows_per_file,
                  max_rows_per_file=max_rows_per_file, num_rows_per_file=num_rows_per_file,
                  arrow_open_stream_args=arrow_open_stream_args, options=options)
    if filename_provider is not None:
        # One uuid for the write, one index per write task (as Ray numbers its write tasks).
        kwargs["filename_provider"] = _files.TaskNames(filename_provider, uuid.uuid4().hex, mode)
    if filesystem is not None or "://" in path:
        from millstream import read_api

        protocol = getattr(filesystem, "protocol", None)
        protocols = protocol if isinstance(protocol, (tuple, list)) else (protocol,)
        if path.startswith("memory://") or "memory" in protocols:
            raise NotImplementedError(f"{fn_name}: an in-memory filesystem is this process's own: Ray's "
                                      "workers cannot write to it (use execution_backend='local')")

        spec = read_api.filesystem_spec(fn_name, filesystem)
        handle, directory = _core.resolve_path(read_api.fs_path(spec and spec.get("fs"), path), spec, fn_name)
        if handle.type_name != "local":
            # An object store: the mode applied here, then each task uploads its own files
            # (each appears only when complete), through the same filesystem.
            if not _core.prepare_write_dir_on(handle, directory, mode, fn_name):
                logging.getLogger("millstream").warning("[SaveMode=ignore] Skipping %s: it exists", path)
                return
            execution = RayExecution(dataset, sink=(fmt, path, dict(kwargs, filesystem=filesystem)))
            try:
                execution.drain()
            finally:
                dataset._last_stats = execution.stats()
                execution.close()
            return
        path = directory
    directory = os.path.abspath(_core.local_path(path, fn_name))
    if os.path.isfile(directory):
        raise FileExistsError(f"{fn_name}: '{directory}' is a file; give a directory")
    created = not os.path.lexists(directory)
    if not _core.prepare_write_dir(directory, mode, fn_name):
        logging.getLogger("millstream").warning("[SaveMode=ignore] Skipping %s: it exists", path)
        return
    before = _files.listing(directory, "parquet") if fmt == "parquet" else set()
    execution = RayExecution(dataset, sink=(fmt, directory, kwargs))
    try:
        execution.drain()
    finally:
        dataset._last_stats = execution.stats()
        execution.close()
    if created and _files.remove_if_empty(directory):
        return
    if fmt == "parquet" and (options or {}).get("schema") is None:
        _files.unify_parquet_files(_files.listing(directory, "parquet") - before,
                                   _files.parquet_rewrite_args(dict(options or {})))
