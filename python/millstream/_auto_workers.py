"""``DataContext.python_udf_workers = "auto"``: a function UDF starts on the engine's
threads and moves to worker processes once its calls are measured to keep the GIL busy.

The measure is the time the UDF's calls spend asleep while they run. A call's wall time
is its time on a CPU, its time waiting for one (both from the kernel's per-thread
``/proc/thread-self/schedstat``, so other programs' share of the machine is left out) and
the rest, asleep: waiting for the GIL, for IO or for a lock. A UDF that keeps the GIL
busy shows three things at once, over a window of its recent calls:

- its calls overlap (two or more engine threads are in it at a time: ``overlap``, the
  sum of the calls' wall times over the window's, >= OVERLAP_MIN);
- a good part of their time is spent asleep (``asleep`` >= ASLEEP_MIN);
- yet together they keep only about one core busy (``cores``, their CPU time, running
  or runnable, over the window's wall time), so that processes would give each of the
  ``overlap`` calls a core of its own: ``overlap / cores`` >= GAIN_MIN.

A UDF in numpy, Arrow or torch (which release the GIL) keeps as many cores busy as calls
overlap; one waiting for IO keeps none (``cores`` < CORES_MIN); neither moves. Calls of
under MIN_CALL_CPU_S of CPU stay on threads: a round trip to a worker (about 0.2-0.5 ms)
would cost more than the GIL does. The verdict is reached once, from the first
SAMPLE_MIN..SAMPLE_MAX calls (SAMPLE_MIN_LONG if they are long) (in the first executions that call the UDF), and kept.
Callable classes stay on threads: an actor's state is made once, in one place.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import threading
import time
from typing import Callable, List, Optional, Tuple

SAMPLE_MIN = 8  # calls before a verdict for processes
SAMPLE_MIN_LONG = 4  # ... or these, when they span LONG_WINDOW_S (long calls: each waits less)
LONG_WINDOW_S = 0.5
SAMPLE_WINDOW = 16  # the recent calls judged
SAMPLE_MAX = 64  # calls after which a UDF not found GIL-bound stays on threads
MIN_CALL_CPU_S = 1e-3
OVERLAP_MIN = 1.3
ASLEEP_MIN = 0.35
GAIN_MIN = 1.5
CORES_MIN = 0.5

SCHEDSTAT = "/proc/thread-self/schedstat"

# (start ns, end ns, on-CPU ns, runnable-waiting ns) of one call
Sample = Tuple[int, int, int, int]


def _libc():
    """libc's open/read/close, called holding the GIL (``ctypes.PyDLL``): a read through
    Python's own IO lets the GIL go, and taking it back from a thread running Python
    costs up to the switch interval (5 ms), which would be counted as the call's."""
    try:
        libc = ctypes.PyDLL(None)
        fns = libc.open, libc.read, libc.close
    except (OSError, AttributeError):
        return None
    fns[0].argtypes, fns[0].restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_int
    fns[1].argtypes, fns[1].restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_ssize_t
    fns[2].argtypes, fns[2].restype = [ctypes.c_int], ctypes.c_int
    return fns


_LIBC = _libc()


def _sched() -> Optional[Tuple[int, int]]:
    """This thread's (on-CPU ns, waiting-for-a-CPU ns) so far, or None without them."""
    if _LIBC is None:
        return None
    libc_open, libc_read, libc_close = _LIBC
    fd = libc_open(SCHEDSTAT.encode(), os.O_RDONLY | os.O_CLOEXEC)
    if fd < 0:
        return None
    try:
        buf = ctypes.create_string_buffer(128)
        n = libc_read(fd, buf, len(buf) - 1)
    finally:
        libc_close(fd)
    try:
        oncpu, runq = buf.raw[:max(n, 0)].split()[:2]
        return int(oncpu), int(runq)
    except ValueError:
        return None


def schedstat_available() -> bool:
    first = _sched()
    return first is not None and first[0] > 0


def judge(samples: List[Sample], total: int) -> Tuple[Optional[str], str]:
    """The verdict on a UDF from its recent ``samples`` after ``total`` calls:
    ("processes" | "threads" | None while undecided, the figures behind it)."""
    n = len(samples)
    if n == 0:
        return None, "no calls yet"
    window = max(s[1] for s in samples) - min(s[0] for s in samples)
    wall = sum(s[1] - s[0] for s in samples)
    oncpu = sum(s[2] for s in samples)
    runq = sum(s[3] for s in samples)
    asleep = max(0, wall - oncpu - runq) / wall if wall > 0 else 0.0
    overlap = wall / window if window > 0 else 1.0
    cores = (oncpu + runq) / window if window > 0 else 0.0
    gain = overlap / cores if cores > 0 else 0.0
    figures = (f"over its last {n} of {total} calls: {overlap:.2f} calls at a time, "
               f"asleep {asleep:.0%} of their time, {cores:.2f} cores busy, "
               f"{oncpu / n / 1e6:.2f} ms CPU a call")
    enough = n >= SAMPLE_MIN or (n >= SAMPLE_MIN_LONG and window >= LONG_WINDOW_S * 1e9)
    if enough and oncpu / n < MIN_CALL_CPU_S * 1e9:
        return "threads", f"{figures} (calls too short for a round trip to a worker to pay)"
    if (enough and overlap >= OVERLAP_MIN and asleep >= ASLEEP_MIN
            and cores >= CORES_MIN and gain >= GAIN_MIN):
        return "processes", f"{figures} (the GIL kept them to one core)"
    if total >= SAMPLE_MAX:
        return "threads", f"{figures} (not held back by the GIL)"
    return None, figures


class AutoUdf:
    """The callable the engine calls per batch for a function UDF in "auto" mode: the
    thread-mode call while measured, then the one chosen (``_workers.TaskUdf`` for
    processes)."""

    def __init__(self, thread_call: Callable, make_call: Callable[[], Callable], name: str,
                 remote_args: dict):
        from millstream import _workers

        self.name = name
        self._thread_call = thread_call
        self._make_call = make_call
        self._remote_args = dict(remote_args)
        # max_retries is checked now, as for a UDF put on processes by the user.
        _workers._retries(name, "max_retries", remote_args.get("max_retries"), 3)
        self._lock = threading.Lock()
        self._samples: "collections.deque[Sample]" = collections.deque(maxlen=SAMPLE_WINDOW)
        self._calls = 0
        self.verdict: Optional[str] = None
        self.reason = "not called yet"
        if schedstat_available():
            self._target = self._measured
        else:
            self._settle("threads", f"no per-thread CPU counters ({SCHEDSTAT}) to measure with")

    def __call__(self, batch):
        return self._target(batch)

    def _measured(self, batch):
        # The clock is read outside the counters: reading them is a system call, which
        # lets the GIL go, and the wait to take it back is part of the call's cost.
        start = time.perf_counter_ns()
        before = _sched()
        try:
            return self._thread_call(batch)
        finally:
            after = _sched()
            end = time.perf_counter_ns()
            if before is not None and after is not None:
                self._record((start, end, after[0] - before[0], after[1] - before[1]))

    def _record(self, sample: Sample) -> None:
        with self._lock:
            if self.verdict is not None:
                return
            self._samples.append(sample)
            self._calls += 1
            verdict, reason = judge(list(self._samples), self._calls)
            self.reason = reason
            if verdict is None:
                return
            self.verdict = verdict  # one thread settles it; the others' samples are dropped
        self._settle(verdict, reason)

    def _settle(self, verdict: str, reason: str) -> None:
        target = self._thread_call
        if verdict == "processes":
            from millstream import _workers

            try:
                target = _workers.wrap(self._make_call, False, self.name, 0.0, self._remote_args)
            except TypeError as exc:  # cloudpickle cannot send it
                verdict, reason = "threads", f"{reason}; it stays on threads: {exc}"
        self.verdict, self.reason = verdict, reason
        self._target = target

    def where(self) -> str:
        return self.verdict or "threads, measuring"


def annotate(text: str, udfs) -> str:
    """``text`` (a dataset's stats or plan) with the mark of each of its "auto" operators
    (``udfs``: the dataset's AutoUdfs, carried from the datasets it was made from) saying
    where the UDF runs, and a line per operator with the measure behind it."""
    named = collections.defaultdict(list)
    for udf in udfs:
        if udf.name in text:
            named[udf.name].append(udf)
    notes = []
    for name, group in sorted(named.items()):
        where = "/".join(sorted({u.where() for u in group}))
        # Not inside a longer name ("FlatMap(f)[auto]" holds "Map(f)[auto]").
        text = re.sub(r"(?<![\w.])" + re.escape(name), f"{name[:-1]}: {where}]", text)
        for u in group:
            notes.append(f"  {name[:-len('[auto]')]}: {u.where()}, {u.reason}")
    if notes:
        text = text.rstrip("\n") + "\npython_udf_workers='auto':\n" + "\n".join(notes) + "\n"
    return text


def inherit(result, args, kwargs) -> None:
    """Give ``result`` (a Dataset or GroupedData made by a public call) the AutoUdfs of the
    datasets it was made from, so its stats() and explain() can say where they ran. A
    materialized dataset passes none on: what is made from it does not run them again."""
    found = list(getattr(result, "_auto_udfs", ()))
    for value in (*args, *kwargs.values()):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if type(item).__name__ == "MaterializedDataset" and item is not result:
                continue
            for udf in getattr(item, "_auto_udfs", ()):
                if udf not in found:
                    found.append(udf)
    if found:
        result._auto_udfs = tuple(found)
