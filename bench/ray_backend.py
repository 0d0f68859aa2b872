"""millstream on Ray (DataContext.execution_backend = "ray") against Ray Data, on the same
local Ray cluster, with 1 and then 2 nodes.

    .venv/bin/python bench/ray_backend.py --size smoke            # a few MB: a quick check
    .venv/bin/python bench/ray_backend.py --size quick --nodes 1,2

Workloads (bench/workloads.py, the same functions bench/run.py times): P1 etl (read ->
filter -> map_batches -> write), P2 ingest (read -> map_batches -> iter_batches), P3
small_files (many tiny files -> map_batches -> count) and sort (read -> sort ->
iter_batches) and join (main inner-joined with the 1/16-size dim table on id = key, every
row consumed: millstream broadcasts dim, which fits its cap, where Ray Data exchanges both
sides; Ray Data's join needs ``--cpus-per-node 2``: with one CPU per node it made no
progress in 10 minutes on the smoke data). Every answer is checked against the data
manifest.

The cluster is ray.cluster_utils.Cluster on this machine: each node one raylet with
``--cpus-per-node`` CPUs. On a machine with few cores, two nodes share the same cores as one:
the 1 -> 2 node figures measure the coordination overhead of more nodes (object transfer
between raylets, scheduling), not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

WORKLOADS = {"etl": "etl_dataset", "ingest": "ingest_dataset", "small_files": "small_files_dataset",
             "sort": "sort_dataset", "join": "join_dataset"}


def _start_cluster(nodes: int, cpus: int, store: int):
    import ray
    from ray.cluster_utils import Cluster

    # Ray Data's workers import the UDFs of bench/workloads.py by reference.
    os.environ["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "object_store_memory": store})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus, object_store_memory=store)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    return cluster


def _engine(name: str):
    if name == "millstream":
        import millstream

        ctx = millstream.DataContext.get_current()
        ctx.execution_backend = "ray"
        ctx.enable_progress_bars = False
        return millstream
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray.data


def main() -> None:
    import datagen
    import workloads

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="smoke", choices=sorted(datagen.SIZES))
    p.add_argument("--nodes", default="1,2", help="node counts to run, comma-separated (default 1,2)")
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--object-store-mb", type=int, default=512)
    p.add_argument("--engines", default="millstream,ray")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--repeat", type=int, default=1, help="runs per figure (the median is reported)")
    p.add_argument("--data-dir", default=os.path.join(HERE, ".data"))
    args = p.parse_args()

    data_dir = os.path.abspath(args.data_dir)
    manifest = datagen.ensure_data(data_dir, args.size, log=lambda m: print(m, flush=True))
    chosen = args.workloads.split(",")
    if "sort" in chosen:
        manifest["keys"] = datagen.ensure_extra(data_dir, args.size, "keys", log=lambda m: print(m, flush=True))
    if "join" in chosen:
        manifest["dim"] = datagen.ensure_extra(data_dir, args.size, "dim", log=lambda m: print(m, flush=True))
    results = {}
    for nodes in [int(n) for n in args.nodes.split(",")]:
        import ray

        cluster = _start_cluster(nodes, args.cpus_per_node, args.object_store_mb << 20)
        try:
            for engine in args.engines.split(","):
                lib = _engine(engine)
                for name in chosen:
                    fn = getattr(workloads, WORKLOADS[name])
                    walls = []
                    for _ in range(args.repeat):
                        tmp = os.path.join(data_dir, args.size, "tmp-ray-backend")
                        shutil.rmtree(tmp, ignore_errors=True)  # etl writes into a fresh directory
                        c = workloads.Ctx(engine, manifest, tmp, lib)
                        try:
                            walls.append(fn(c)["wall_s"])
                        except Exception as e:  # noqa: BLE001 - reported, the others still run
                            print(f"[{nodes} node(s)] {engine} {name}: FAILED {type(e).__name__}: {e}", flush=True)
                            break
                    if walls:
                        results[(nodes, engine, name)] = statistics.median(walls)
                        print(f"[{nodes} node(s)] {engine:10s} {name:12s} {results[(nodes, engine, name)]:8.2f} s",
                              flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
            time.sleep(1)

    engines = args.engines.split(",")
    node_counts = [int(n) for n in args.nodes.split(",")]
    header = "| workload | " + " | ".join(f"{e} {n} node(s)" for n in node_counts for e in engines) + " |"
    print(f"\nsize={args.size}, {args.cpus_per_node} CPU(s) per node, wall seconds (median of {args.repeat})\n")
    print(header)
    print("|" + "---|" * (1 + len(node_counts) * len(engines)))
    for name in chosen:
        cells = [f"{results[(n, e, name)]:.2f}" if (n, e, name) in results else "-" for n in node_counts for e in engines]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
