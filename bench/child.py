"""Runs one (engine, benchmark) in this fresh process and writes a JSON result.

Started by run.py; not meant to be called by hand (but it can be, for
debugging: ``python bench/child.py --engine ray --bench etl
--manifest bench/.data/smoke/manifest.json --out /tmp/r.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402


def _quiet_progress(lib) -> None:
    ctx = lib.DataContext.get_current()
    try:
        ctx.enable_progress_bars = False
    except Exception:  # an engine without this knob keeps its default
        pass


def setup_engine(engine: str, ray_init: dict | None = None) -> tuple[object, float | None]:
    """Imports the engine; returns (dataset module or None, init seconds or None)."""
    if engine == "millstream":
        import millstream as md
        # pyarrow imports pandas the first time it converts a string column or a chunked
        # array to numpy (0.15-0.6 s here); `import ray.data` has already imported it, so
        # import it here too, keeping one-off imports out of both engines' timed region.
        import pandas  # noqa: F401

        _quiet_progress(md)
        return md, None
    if engine == "ray":
        import ray
        import ray.data

        t0 = time.perf_counter()
        # address="local" always starts a private instance, never joins another.
        info = ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            configure_logging=False,
            **(ray_init or {}),
        )
        init_s = time.perf_counter() - t0
        _RAY_SESSION["dir"] = (getattr(info, "address_info", None) or {}).get("session_dir")
        _quiet_progress(ray.data)
        return ray.data, init_s
    if engine == "polars":
        import polars  # noqa: F401
    elif engine == "duckdb":
        import duckdb  # noqa: F401
        # duckdb imports pyarrow on the first fetch of Arrow batches; keep that out of the timing.
        import pyarrow  # noqa: F401
    elif engine == "pyarrow":
        import pyarrow  # noqa: F401
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return None, None


_RAY_SESSION: dict = {}


def teardown_engine(engine: str, ok: bool) -> None:
    if engine == "ray":
        import ray

        ray.shutdown()
        # Each run starts its own Ray instance; drop its logs unless it failed.
        session = _RAY_SESSION.get("dir")
        if ok and session and os.path.basename(session).startswith("session_"):
            shutil.rmtree(session, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--engine", required=True)
    p.add_argument("--bench", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--tmp-root", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    with open(args.manifest) as f:
        manifest = json.load(f)
    tmp_root = args.tmp_root or os.path.join(os.path.dirname(args.manifest), "tmp")
    result: dict = {"engine": args.engine, "bench": args.bench}
    rc = 0
    ctx = None
    try:
        bench = workloads.BENCHMARKS[args.bench]
        fn = bench.impls.get(args.engine)
        if bench.placeholder is not None:
            fn = bench.placeholder
        if fn is None:
            raise ValueError(f"benchmark {args.bench!r} has no {args.engine} version")
        lib, init_s = setup_engine(args.engine, bench.ray_init(manifest) if bench.ray_init else None)
        ctx = workloads.Ctx(engine=args.engine, manifest=manifest, tmp_root=tmp_root, lib=lib)
        ok = False
        try:
            out = fn(ctx)
            ok = True
        finally:
            teardown_engine(args.engine, ok)
        result.update(status="ok", init_s=init_s, **out)
    except workloads.NotYet as e:
        result.update(status="not_yet", message=str(e))
    except BaseException as e:  # report everything, including SystemExit from a library
        result.update(
            status="error",
            message=f"{type(e).__name__}: {e}".strip(),
            traceback=traceback.format_exc(),
        )
        traceback.print_exc()
        rc = 1
    finally:
        if ctx is not None:
            for d in os.listdir(tmp_root) if os.path.isdir(tmp_root) else []:
                if d.endswith(f"-{args.engine}-{os.getpid()}"):
                    shutil.rmtree(os.path.join(tmp_root, d), ignore_errors=True)

    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
