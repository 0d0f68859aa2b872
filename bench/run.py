#!/usr/bin/env python
"""millstream benchmark runner: millstream side by side with Ray Data, polars,
duckdb and pyarrow on the same generated data.

    python bench/run.py [--quick | --smoke] [--engines millstream,ray,...]
                        [--bench etl,ingest,...] [--repeats N]

Each (engine, benchmark, repeat) runs in a fresh subprocess; the engines take
turns run by run. The parent samples the resident memory of the child and all
its descendants every 50 ms. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import datagen  # noqa: E402
import workloads  # noqa: E402

PACKAGES = ["millstream", "pyarrow", "numpy", "pandas", "ray", "polars", "duckdb", "psutil"]
PROBES = {
    "millstream": "import millstream as md; md.read_parquet; md.range; md.DataContext",
    "ray": "import ray, ray.data",
    "polars": "import polars",
    "duckdb": "import duckdb",
    "pyarrow": "import pyarrow.parquet, pyarrow.dataset, pyarrow.compute",
}
DEFAULT_TIMEOUT = {"smoke": 120, "quick": 900, "full": 3600}
SAMPLE_INTERVAL_S = 0.05


# --------------------------------------------------------------------------
# Process-tree memory sampling


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.seen: dict[int, object] = {}  # pid -> first Process object seen
        self.max_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        ps = self.psutil
        while not self._stop_event.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except (ps.NoSuchProcess, ps.ZombieProcess):
                break
            total = 0
            alive = 0
            for p in procs:
                self.seen.setdefault(p.pid, p)
                try:
                    total += p.memory_info().rss
                    alive += 1
                except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                    pass
            self.peak_rss = max(self.peak_rss, total)
            self.max_procs = max(self.max_procs, alive)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def leftovers(self) -> list:
        out = []
        for pid, p in self.seen.items():
            if pid == self.root.pid:
                continue
            try:
                if p.is_running() and p.status() != self.psutil.STATUS_ZOMBIE:
                    out.append(p)
            except self.psutil.Error:
                pass
        return out


def kill_tree(sampler: TreeSampler, proc: subprocess.Popen) -> None:
    """Kills the child and every descendant it was seen with, by pid."""
    ps = sampler.psutil
    try:
        victims = [sampler.root] + sampler.root.children(recursive=True)
    except ps.Error:
        victims = []
    for p in victims + sampler.leftovers():
        try:
            p.kill()
        except ps.Error:
            pass
    proc.wait()


def reap_leftovers(sampler: TreeSampler, grace_s: float = 10.0) -> int:
    """Waits for descendants that outlived the child (e.g. Ray daemons), then kills them."""
    ps = sampler.psutil
    deadline = time.monotonic() + grace_s
    left = sampler.leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = sampler.leftovers()
    for p in left:
        try:
            p.kill()
        except ps.Error:
            pass
    return len(left)


# --------------------------------------------------------------------------
# Runs


@dataclass
class RunResult:
    bench: str
    engine: str
    repeat: int
    status: str  # ok | error | not_yet
    wall_s: float | None = None
    rows: int | None = None
    init_s: float | None = None
    peak_rss: int | None = None
    extra: dict = field(default_factory=dict)
    message: str = ""
    log: str = ""


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _dir_contents(path: str) -> tuple[int, int, str]:
    """(files, bytes, first file's path relative to ``path``) below ``path``."""
    files = size = 0
    first = ""
    for base, _, names in os.walk(path):
        for name in names:
            files += 1
            first = first or os.path.relpath(os.path.join(base, name), path)
            try:
                size += os.path.getsize(os.path.join(base, name))
            except OSError:
                pass
    return files, size, first


def run_one(bench: str, engine: str, repeat: int, manifest_path: str, work_dir: str, timeout: float,
            fresh_tmpdir: bool = False) -> RunResult:
    logs = os.path.join(work_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{bench}-{engine}-{repeat}.log")
    out_path = os.path.join(logs, f"{bench}-{engine}-{repeat}.json")
    if os.path.exists(out_path):
        os.remove(out_path)
    env = dict(os.environ)
    # Ray workers import the UDFs of workloads.py by module name.
    env["PYTHONPATH"] = os.pathsep.join(p for p in [HERE, env.get("PYTHONPATH", "")] if p)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    spill_dir = None
    if fresh_tmpdir:
        # Spill files go under TMPDIR; a short path, as Ray puts its sockets there too.
        spill_dir = tempfile.mkdtemp(prefix="msb-")
        env["TMPDIR"] = spill_dir
    cmd = [
        sys.executable,
        os.path.join(HERE, "child.py"),
        "--engine", engine,
        "--bench", bench,
        "--manifest", manifest_path,
        "--tmp-root", os.path.join(work_dir, "tmp"),
        "--out", out_path,
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(sampler, proc)
        except KeyboardInterrupt:
            kill_tree(sampler, proc)
            raise
        finally:
            sampler.stop()
    leftover = reap_leftovers(sampler)
    shutil.rmtree(os.path.join(work_dir, "tmp"), ignore_errors=True)
    spill_left = None
    if spill_dir is not None:
        spill_left = _dir_contents(spill_dir)
        shutil.rmtree(spill_dir, ignore_errors=True)

    res = RunResult(bench, engine, repeat, "error", peak_rss=sampler.peak_rss, log=log_path)
    if timed_out:
        res.message = f"timed out after {timeout:.0f} s"
        return res
    try:
        with open(out_path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        last = [ln for ln in _tail(log_path).splitlines() if ln.strip()]
        res.message = f"exit code {proc.returncode}, no result" + (f": {last[-1].strip()}" if last else "")
        return res
    res.status = data.get("status", "error")
    res.message = data.get("message", "")
    if res.status == "ok":
        if proc.returncode != 0:
            res.status = "error"
            res.message = f"exit code {proc.returncode} after a result"
        res.wall_s = data["wall_s"]
        res.rows = data["rows"]
        res.init_s = data.get("init_s")
        res.extra = data.get("extra") or {}
    if leftover:
        res.extra["leftover_procs_killed"] = leftover
    if spill_left is not None:
        res.extra["tmpdir_left_files"], res.extra["tmpdir_left_bytes"], first = spill_left
        if first:
            res.extra["tmpdir_left_first"] = first
        if spill_left[0] and engine == "millstream" and res.status == "ok":
            res.status = "error"
            res.message = f"{spill_left[0]} file(s), {spill_left[1]} bytes left in the spill directory (TMPDIR)"
    return res


def probe_engine(engine: str) -> str | None:
    """Returns None when the engine imports in a fresh interpreter, else the reason."""
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        r = subprocess.run(
            [sys.executable, "-c", PROBES[engine]],
            capture_output=True, text=True, timeout=180, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "import timed out"
    if r.returncode == 0:
        return None
    lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"import failed (exit {r.returncode})"


# --------------------------------------------------------------------------
# Reporting


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> list[tuple[str, str]]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = f"{line.split('=', 1)[1].strip().strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    mem = psutil.virtual_memory().total
    info = [
        ("CPU", cpu),
        ("cores", f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical"),
        ("memory", f"{mem / 2**30:.1f} GiB"),
        ("OS", os_name),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in package_versions().items())),
    ]
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            info.append((var, os.environ[var]))
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--"], timeout=30).returncode != 0
            info.append(("git commit", commit + (" (tracked files modified)" if dirty else "")))
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def _show_path(path: str) -> str:
    """The path relative to the current folder when it lies below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _fmt_num(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:.2f}G"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


COLUMNS = ["benchmark", "engine", "median wall s", "best wall s", "rows/s", "peak RSS MB", "peer/millstream", "init s", "notes"]


def build_rows(selected, engines, unavailable, results, repeats) -> tuple[list[list[str]], list[str]]:
    """Returns table rows and the list of error descriptions."""
    by_key: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        by_key.setdefault((r.bench, r.engine), []).append(r)

    def median_wall(bench: str, engine: str) -> float | None:
        runs = [r for r in by_key.get((bench, engine), []) if r.status == "ok"]
        bad = [r for r in by_key.get((bench, engine), []) if r.status != "ok"]
        if not runs or bad:
            return None
        return statistics.median(r.wall_s for r in runs)

    rows, errors = [], []
    for name in selected:
        b = workloads.BENCHMARKS[name]
        if b.placeholder is not None:
            rows.append([name, "all", "-", "-", "-", "-", "-", "-", workloads.placeholder_reason(b)])
            continue
        ref = median_wall(b.ratio_to or name, "millstream")
        for engine in engines:
            if engine not in b.impls:
                continue
            if engine in unavailable:
                rows.append([name, engine, "-", "-", "-", "-", "-", "-", f"unavailable: {unavailable[engine]}"])
                continue
            runs = by_key.get((name, engine), [])
            bad = [r for r in runs if r.status != "ok"]
            if bad:
                r = bad[0]
                msg = r.message.splitlines()[0] if r.message else "failed"
                errors.append(f"{name}/{engine} (repeat {r.repeat}): {r.message}\n    log: {_show_path(r.log)}")
                rows.append([name, engine, "-", "-", "-", "-", "-", "-", f"ERROR: {msg[:120]}"])
                continue
            if not runs:
                continue
            wall = statistics.median(r.wall_s for r in runs)
            rss = statistics.median(r.peak_rss for r in runs)
            inits = [r.init_s for r in runs if r.init_s is not None]
            init = statistics.median(inits) if inits else None
            notes = []
            if b.ratio_to:
                notes.append(f"ratio vs millstream {b.ratio_to}")
            for key, fmt in (
                ("first_batch_s", lambda v: f"first batch {v:.3f} s"),
                ("per_block_us", lambda v: f"{v:.0f} us/block"),
                ("files", lambda v: f"{v} files"),
            ):
                vals = [r.extra[key] for r in runs if r.extra.get(key) is not None]
                if vals:
                    notes.append(fmt(statistics.median(vals)))
            limits = [r.extra["memory_limit"] for r in runs if r.extra.get("memory_limit")]
            if limits:
                over = (max(r.peak_rss for r in runs) - limits[0]) / 2**20
                notes.append(f"limit {limits[0] / 2**20:.0f} MiB, input {runs[0].extra['input_bytes'] / 2**20:.0f} MiB; "
                             f"worst peak RSS {over:+.0f} MiB vs limit")
            left = [r.extra["tmpdir_left_files"] for r in runs if "tmpdir_left_files" in r.extra]
            if left:
                firsts = [r.extra["tmpdir_left_first"] for r in runs if r.extra.get("tmpdir_left_first")]
                notes.append("TMPDIR empty after every run" if not any(left)
                             else f"TMPDIR left {max(left)} files (e.g. {firsts[0]})")
            spills = [r.extra["spill"] for r in runs if r.extra.get("spill")]
            if spills:
                notes.append(spills[0])
            killed = sum(r.extra.get("leftover_procs_killed", 0) for r in runs)
            if killed:
                notes.append(f"{killed} leftover procs killed")
            notes.append(f"n={len(runs)}")
            ratio = "-"
            if ref:
                ratio = f"{wall / ref:.2f}"
            rows.append([
                name, engine, _fmt_s(wall), _fmt_s(min(r.wall_s for r in runs)),
                _fmt_num(runs[0].rows / wall) if wall > 0 else "-",
                f"{rss / 2**20:.0f}", ratio, _fmt_s(init), "; ".join(notes),
            ])
    return rows, errors


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in rows)) if rows else len(COLUMNS[i]) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5, 6, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---", "---"] + ["---:"] * 6 + ["---"]) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def write_results(path: str, rows, errors, args, size: str, manifest: dict, repeats: int, started: float,
                  load_start: str) -> None:
    spec = manifest["spec"]
    lines = [
        "# millstream benchmark results",
        "",
        f"Written by `python bench/run.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}` on "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{time.time() - started:.0f} s in all. Medians over {repeats} repeat(s); each run in a fresh "
        "process, engines taking turns run by run. See `bench/README.md` for what each benchmark measures.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in machine_info()]
    lines.append(f"- **load average** (1/5/15 min): {load_start} at the start, {_loadavg()} at the end")
    lines += [
        "",
        "## Data",
        "",
        f"- size `{size}`: main table {manifest['rows']:,} rows in {spec['files']} files x {spec['row_groups']} "
        f"row groups, {manifest['main_bytes'] / 2**20:.1f} MiB of Parquet (id int64, a/b float64, cat string, "
        f"qty int32, day int32); the filter keeps {manifest['filtered_rows']:,} rows",
        f"- small files: {spec['small_files']:,} files x {spec['small_rows']:,} rows, "
        f"{manifest['small_bytes'] / 2**20:.1f} MiB",
        f"- block_overhead: range({spec['range_rows']:,}, override_num_blocks={spec['range_blocks']:,})",
    ]
    if "keys" in manifest:
        k = manifest["keys"]
        lines.append(f"- sort keys: {k['rows']:,} uniformly random int64 keys in {k['spec']['sort_files']} files, "
                     f"{k['bytes'] / 2**20:.1f} MiB of Parquet (rows/s of sort = keys/s)")
    if "big" in manifest:
        b = manifest["big"]
        lines.append(f"- memory_bounded input: {b['rows']:,} rows of key/id int64, a/b float64 "
                     f"({b['rows'] * 32 / 2**20:.0f} MiB in Arrow, {b['bytes'] / 2**20:.0f} MiB of Parquet) "
                     f"under DataContext resource_limits.object_store_memory = {b['memory_limit'] / 2**20:.0f} MiB")
    lines += [
        "",
        "## Results",
        "",
        "wall = the pipeline alone (Ray's `ray.init` is in *init s*); best = the fastest repeat; rows/s = input rows / median wall; "
        "peak RSS = max over 50 ms samples of the summed RSS of the run's whole process tree (median over "
        "repeats); peer/millstream = the engine's median wall / millstream's (above 1: millstream is faster).",
        "",
        markdown_table(rows),
        "",
    ]
    if errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


# --------------------------------------------------------------------------
# Main


def _csv(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few hundred MB of data")
    size.add_argument("--smoke", action="store_true", help="a few MB; checks the suite runs (CI)")
    p.add_argument(
        "--engines", type=lambda v: _csv(v, workloads.ALL_ENGINES, "engine"),
        default=list(workloads.ALL_ENGINES), help="comma-separated; default: all",
    )
    p.add_argument(
        "--bench", type=lambda v: _csv(v, list(workloads.BENCHMARKS), "benchmark"),
        default=list(workloads.BENCHMARKS), help="comma-separated; default: all",
    )
    p.add_argument("--repeats", type=int, default=None, help="runs per (engine, benchmark); default 1 for --smoke, else 3")
    p.add_argument("--data-dir", default=os.path.join(HERE, ".data"), help="data cache (default bench/.data)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    p.add_argument("--results", default=None, help="where to write the Markdown results")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for b in workloads.BENCHMARKS.values():
            engines = workloads.placeholder_reason(b) if b.placeholder else ", ".join(b.impls)
            print(f"{b.name:15} {b.what}\n{'':15} [{engines}]")
        return 0
    started = time.time()
    load_start = _loadavg()
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    repeats = args.repeats or (1 if args.smoke else 3)
    timeout = args.timeout or DEFAULT_TIMEOUT[size]
    data_dir = os.path.abspath(args.data_dir)
    results_path = args.results or (
        os.path.join(data_dir, "RESULTS-smoke.md") if args.smoke else os.path.join(HERE, "RESULTS.md")
    )

    engines = args.engines
    selected = args.bench
    unavailable: dict[str, str] = {}
    for engine in engines:
        reason = probe_engine(engine)
        if reason:
            unavailable[engine] = reason
            print(f"[engine] {engine}: unavailable: {reason}", flush=True)
    manifest = datagen.ensure_data(data_dir, size, log=lambda m: print(m, flush=True))
    work_dir = os.path.join(data_dir, size)
    for extra in sorted({n for name in selected for n in workloads.BENCHMARKS[name].needs}):
        manifest[extra] = datagen.ensure_extra(data_dir, size, extra, log=lambda m: print(m, flush=True))
    # The manifest the children read: the cached one plus the on-demand sections.
    manifest_path = os.path.join(work_dir, "manifest-run.json")
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(manifest_path + ".tmp", manifest_path)

    plan = []
    for rep in range(repeats):
        for name in selected:
            b = workloads.BENCHMARKS[name]
            if b.placeholder is not None:
                continue
            runnable = [e for e in engines if e in b.impls and e not in unavailable
                        and not (size == "smoke" and e in b.not_in_smoke)]
            # Rotate the order each repeat so no engine always runs first.
            k = rep % len(runnable) if runnable else 0
            for engine in runnable[k:] + runnable[:k]:
                plan.append((name, engine, rep))

    results: list[RunResult] = []
    for i, (name, engine, rep) in enumerate(plan, 1):
        r = run_one(name, engine, rep, manifest_path, work_dir, timeout,
                    fresh_tmpdir=workloads.BENCHMARKS[name].fresh_tmpdir)
        results.append(r)
        if r.status == "ok":
            init = f", init {r.init_s:.2f} s" if r.init_s is not None else ""
            print(
                f"[{i}/{len(plan)}] {name} {engine} #{rep + 1}: {r.wall_s:.3f} s{init}, "
                f"peak RSS {r.peak_rss / 2**20:.0f} MB",
                flush=True,
            )
        else:
            print(f"[{i}/{len(plan)}] {name} {engine} #{rep + 1}: {r.status.upper()}: {r.message}", flush=True)
            if r.status == "error":
                tail = _tail(r.log, 20)
                if tail:
                    print("    " + tail.replace("\n", "\n    ").rstrip(), flush=True)

    rows, errors = build_rows(selected, engines, unavailable, results, repeats)
    print()
    print(text_table(rows))
    write_results(results_path, rows, errors, args, size, manifest, repeats, started, load_start)
    print(f"\nwrote {_show_path(results_path)}")
    if errors:
        print(f"\n{len(errors)} benchmark(s) failed:", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
