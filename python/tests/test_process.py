"""Process-level behaviour: Ctrl-C during a long pipeline, and the `millstream` CLI."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

_SIGINT_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    import millstream as md

    # A parent started in the background (as CI may be) passes SIGINT down ignored;
    # a user at a terminal has Python's default handler, which is what this checks.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow(batch):
        time.sleep(0.02)
        return batch

    mode, out = sys.argv[1], sys.argv[2]
    ds = md.range(10**8, override_num_blocks=100_000).map_batches(slow)
    if mode == "iterate":
        for i, batch in enumerate(ds.iter_batches(batch_size=100)):
            if i == 0:
                print("ready", flush=True)
    else:
        print("ready", flush=True)
        if mode == "materialize":
            ds.materialize()
        elif mode == "count":
            ds.count()
        elif mode == "write":
            ds.write_parquet(out)
        elif mode == "recover":
            try:
                ds.take_all()
            except KeyboardInterrupt:
                print("caught", flush=True)
                assert md.range(1000, override_num_blocks=10).map_batches(lambda b: b).count() == 1000
                print("engine still works", flush=True)
                sys.exit(0)
    print("finished without interruption", flush=True)
""")


def _start(tmp_path, mode):
    script = tmp_path / "long.py"
    script.write_text(_SIGINT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode, str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(0.5)  # well inside the pipeline now
    return proc


@pytest.mark.parametrize("mode", ["materialize", "iterate", "count", "write"])
def test_sigint_exits_promptly_with_keyboard_interrupt(tmp_path, mode):
    proc = _start(tmp_path, mode)
    try:
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"still running 5 s after SIGINT ({mode}); stderr: {err[-2000:]}")
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err, err[-2000:]
    assert "finished without interruption" not in out
    assert elapsed < 5
    if mode == "write":
        # No partial file visible after the interrupt.
        out_dir = tmp_path / "out"
        for f in (out_dir.iterdir() if out_dir.exists() else []):
            if not f.name.startswith((".", "_")):
                pq.read_table(f)


def test_sigint_is_catchable_and_engine_recovers(tmp_path):
    proc = _start(tmp_path, "recover")
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "caught" in out, err[-2000:]
    assert "engine still works" in out, err[-2000:]
    assert proc.returncode == 0


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "millstream"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("millstream")
    assert found, "the millstream console script is not installed"
    return [found]


def test_cli_demo(tmp_path):
    # As a user runs it: from a working directory, with the default relative --dir.
    proc = subprocess.run(_cli() + ["demo", "--rows", "200000", "--files", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    tmp_path = tmp_path / "millstream-demo"
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Summary" in proc.stdout
    # Check the demo's output against pyarrow on its input.
    orders = pq.read_table(tmp_path / "orders")
    assert orders.num_rows == 200_000
    assert len([f for f in os.listdir(tmp_path / "orders") if f.endswith(".parquet")]) == 2
    kept = orders.filter(pc.field("quantity") >= 3)
    revenue = pq.read_table(tmp_path / "revenue")
    assert revenue.num_rows == kept.num_rows
    assert set(revenue.column_names) >= {"order_id", "price", "quantity", "category", "revenue", "discounted"}
    revenue = revenue.sort_by("order_id")
    kept = kept.sort_by("order_id")
    expected_rev = kept["price"].to_numpy() * kept["quantity"].to_numpy()
    np.testing.assert_allclose(revenue["revenue"].to_numpy(), expected_rev)
    expected_disc = np.where(kept["quantity"].to_numpy() >= 5, expected_rev * 0.9, expected_rev)
    np.testing.assert_allclose(revenue["discounted"].to_numpy(), expected_disc)
    m = re.search(r"total discounted revenue ([\d,]+\.\d\d)", proc.stdout)
    assert m, proc.stdout
    assert float(m.group(1).replace(",", "")) == pytest.approx(np.sum(expected_disc), abs=0.011)


def test_cli_help_and_bad_command():
    proc = subprocess.run(_cli() + ["--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "demo" in proc.stdout
    proc = subprocess.run(_cli() + ["nonsense"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0


_EARLY_STOP_SCRIPT = textwrap.dedent("""
    import numpy as np
    import pyarrow as pa
    import millstream as md

    table = pa.table({"price": np.random.default_rng(0).random(1000)})
    for i in range(150):
        ds = md.from_arrow(table, override_num_blocks=7).map_batches(
            lambda b: {"z": b["price"].astype(np.float32)})
        assert ds.schema().names == ["z"]          # stops after the first block
        assert len(ds.take(1)) == 1                # limit: stops early
        for batch in ds.iter_batches(batch_size=None):
            break                                  # consumer walks away
    print("done", flush=True)
""")


def test_early_stop_of_udf_pipeline_does_not_deadlock(tmp_path):
    # Stopping a running execution whose blocks hold numpy-backed buffers (UDF output)
    # must not hang: repeated many times, in a subprocess so a hang fails cleanly.
    script = tmp_path / "early_stop.py"
    script.write_text(_EARLY_STOP_SCRIPT)
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("stopping a running UDF pipeline early deadlocked (no progress for 15 s)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done" in proc.stdout


_STRESS_SCRIPT = textwrap.dedent("""
    import millstream as md

    for i in range(300):
        ds = md.range(1000, override_num_blocks=100)
        assert sum(len(b["id"]) for b in ds.iter_batches(batch_size=64)) == 1000
        assert len(ds.map_batches(lambda b: b).take_all()) == 1000
    print("done", flush=True)
""")


def test_many_small_executions_never_stall(tmp_path):
    # 600 short executions over 100 small blocks each: a lost wake-up in the scheduler
    # shows up as a stall; in a subprocess so it fails cleanly instead of hanging. They
    # take about 10 s on 2 busy cores; 60 s leaves room for a heavily loaded machine.
    script = tmp_path / "stress.py"
    script.write_text(_STRESS_SCRIPT)
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("an execution stalled: no progress for 60 s over 600 small executions")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done" in proc.stdout


_EXIT_SCRIPT = textwrap.dedent("""
    import queue, sys, threading, time
    import numpy as np
    import millstream as md

    case = sys.argv[1]

    def udf(b):
        time.sleep(0.01)
        return {"x": np.asarray(b["id"]) * 2.0}   # blocks backed by numpy memory

    ds = md.range(10**7, override_num_blocks=10000).map_batches(udf)
    if case == "daemon-thread":                  # a daemon thread feeding a queue
        q = queue.Queue(maxsize=4)
        def feed():
            for batch in ds.iter_batches(batch_size=100):
                q.put(batch)
        threading.Thread(target=feed, daemon=True).start()
        q.get(), q.get()
    elif case == "reference-cycle":              # an unfinished iterator only gc can free
        class Holder:
            pass
        h = Holder()
        h.self = h
        h.it = iter(ds.iter_batches(batch_size=100))
        next(h.it)
        del h
    elif case == "abandoned-generator":
        it = ds.iter_batches(batch_size=100)
        next(it)
    elif case == "udf-running":                  # a UDF call in progress at exit
        def slow(b):
            time.sleep(0.3)
            return b
        it = iter(md.range(1000, override_num_blocks=100).map_batches(slow).iter_rows())
        next(it)
        time.sleep(0.1)
    elif case in ("udf-never-returns", "udf-spins"):   # in a daemon thread
        def stuck(b):
            while True:
                if case == "udf-never-returns":
                    time.sleep(0.02)
        threading.Thread(target=lambda: md.range(10, override_num_blocks=2).map_batches(stuck).take_all(),
                         daemon=True).start()
        time.sleep(0.3)
    elif case.startswith("daemon-"):             # to_pandas, a write, an actor pool in a daemon thread
        class Pass:
            def __call__(self, b):
                time.sleep(0.01)
                return b
        out = sys.argv[2]
        run = {"daemon-to-pandas": lambda: ds.to_pandas(),
               "daemon-write": lambda: ds.write_parquet(out),
               "daemon-actor-pool": lambda: ds.map_batches(Pass, concurrency=2).take_all()}[case]
        threading.Thread(target=run, daemon=True).start()
        time.sleep(0.5)
    print("end of script", flush=True)
""")


@pytest.mark.parametrize("case", ["daemon-thread", "reference-cycle", "abandoned-generator", "udf-running",
                                  "udf-never-returns", "udf-spins", "daemon-to-pandas", "daemon-write",
                                  "daemon-actor-pool"])
def test_interpreter_exit_with_a_live_execution_is_clean(tmp_path, case):
    # These aborted ("terminate called without an active exception"), crashed or hung at
    # exit; the outcome is timing-dependent, so each case runs several times.
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_SCRIPT)
    for run in range(5):
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, str(script), case, str(tmp_path / f"out{run}")],
                                  capture_output=True, text=True,
                                  timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{case}: the interpreter did not exit within 20 s (run {run})")
        elapsed = time.monotonic() - start
        assert "end of script" in proc.stdout, proc.stderr[-3000:]
        assert proc.returncode == 0, f"{case} run {run}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
        assert "terminate called" not in proc.stderr and "Fatal Python error" not in proc.stderr, proc.stderr[-3000:]
        # A daemon thread stays where it is at exit, as in plain Python: no traceback of
        # its call failing because exit cancelled the execution.
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert elapsed < 10, f"{case}: exit took {elapsed:.1f} s"


_STUCK_UDF_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    import millstream as md

    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode = sys.argv[1]

    def slow(batch):
        if mode == "sleeps-20s":
            time.sleep(20)
        while True:                 # never returns
            time.sleep(0.02)

    ds = md.range(100, override_num_blocks=4).map_batches(slow)
    print("ready", flush=True)
    if mode == "uncaught":
        ds.take_all()
    try:
        ds.take_all()
    except KeyboardInterrupt:
        print(f"caught {time.monotonic()}", flush=True)
        assert md.range(1000, override_num_blocks=10).map_batches(lambda b: b).count() == 1000
        print("engine still works", flush=True)
""")


@pytest.mark.parametrize("mode", ["sleeps-20s", "never-returns", "uncaught"])
def test_sigint_during_a_udf_call_does_not_wait_for_it(tmp_path, mode):
    # Ctrl-C stops launching and raises KeyboardInterrupt at once; the UDF call in progress
    # is left to finish (or not) in the background, and the process can still exit.
    script = tmp_path / "stuck.py"
    script.write_text(_STUCK_UDF_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the UDF calls are running
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"still running 10 s after SIGINT ({mode}); stderr: {err[-2000:]}")
        exited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "terminate called" not in err and "Fatal Python error" not in err, err[-3000:]
    if mode == "uncaught":
        assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-3000:]
    else:
        caught = [line for line in out.splitlines() if line.startswith("caught")]
        assert caught, err[-3000:]
        assert float(caught[0].split()[1]) - sent < 2.0
        assert "engine still works" in out, err[-3000:]
        assert proc.returncode == 0, err[-3000:]
    assert exited < 5.0
