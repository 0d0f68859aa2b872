"""Python UDFs in worker processes (``DataContext.python_udf_workers = "processes"``).

The engine's transforms still call a Python callable per batch on their worker threads;
in process mode that callable forwards the batch to a worker process and waits for the
result, with the GIL released, so the executor, its memory budget and backpressure are
those of thread mode.

- A worker is a fresh interpreter (``subprocess`` fork+exec of ``sys.executable``: no fork
  of this threaded process, and unlike multiprocessing's "spawn" the user's ``__main__``
  is not imported again) that runs ``millstream._worker_main``. UDFs travel with
  cloudpickle, once per worker.
- Blocks travel as Arrow IPC streams in files under ``/dev/shm`` (shared memory), named
  ``millstream-udf-<driver pid>-<epoch>-<n>``: the driver writes the input batch (the one
  copy), the worker memory-maps it and reads it without copying, writes its result the
  same way and the driver maps that. The input file is removed when the call returns; the result's
  file is removed as soon as it is mapped, so its memory is the result block's own
  (counted by the engine as any block, freed with it). Blocks of at most INLINE_BYTES
  (64 KiB) travel inside the socket message instead: the same one copy, without a file
  to create, map and remove (545 -> 200 us a call).
- Task pools (functions) share one pool of workers, as many as the CPU limit, started on
  demand; an actor (a callable class) is one worker that constructs the class once and
  keeps it. Workers end when no execution is running any more, and actors also when the
  engine drops them.
- A worker that dies (killed, a crash in a C extension) fails its call: a task is run
  again on another worker up to ``max_retries`` times (Ray's default 3, -1 without
  limit); an actor is restarted (constructed again) up to ``max_restarts`` times and its
  call retried up to ``max_task_retries`` times (Ray Data's defaults: -1 and -1).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from multiprocessing.connection import Connection
from typing import Any, Callable, List, Optional

import pyarrow as pa

from millstream._args import public
from millstream._udf_chain import add_note as _add_note

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
SHM_PREFIX = "millstream-udf-"

MODES = ("threads", "processes", "auto")  # "auto": see millstream._auto_workers

_seq = itertools.count()


class WorkerDiedError(RuntimeError):
    """A UDF's worker process died during a call, and the call was not retried (or its
    retries ran out). The message names the operator and how the process ended."""

    def __init__(self, message: str):
        super().__init__(message)


WorkerDiedError.__init__ = public(WorkerDiedError.__init__, name="WorkerDiedError")


class _WorkerGone(Exception):
    """Internal: the worker of this call died (``description`` says how)."""


class ExecutionEndedError(RuntimeError):
    """A UDF call came after its execution had ended (its workers were stopped)."""


_local = threading.local()


def mode() -> str:
    """Where a transform added now runs its UDF: DataContext.python_udf_workers, or
    "threads" inside ``internal()``."""
    if getattr(_local, "internal", 0):
        return "threads"
    from millstream.context import DataContext

    value = DataContext.get_current().python_udf_workers
    if value not in MODES:
        raise ValueError(f"DataContext.python_udf_workers must be one of {list(MODES)}, got {value!r}")
    return value


@contextlib.contextmanager
def internal():
    """The engine's own Python steps (decoders, datasink writes, drop_columns of an
    unknown schema) stay on threads: they share state with this process."""
    _local.internal = getattr(_local, "internal", 0) + 1
    try:
        yield
    finally:
        _local.internal -= 1


# ---- shared-memory blocks --------------------------------------------------------------

def shm_prefix(pid: Optional[int] = None) -> str:
    """The path prefix of this process's (or ``pid``'s) shared-memory blocks."""
    return os.path.join(SHM_DIR, f"{SHM_PREFIX}{os.getpid() if pid is None else pid}-")


def _new_path() -> str:
    # The epoch (see execution_started) lets the end of one remove only its own files.
    return f"{shm_prefix()}{_epoch}-{next(_seq)}"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_block(path: str, data) -> None:
    """Writes a RecordBatch or Table to ``path`` as one Arrow IPC stream."""
    try:
        with pa.OSFile(path, "wb") as sink:
            with pa.ipc.new_stream(sink, data.schema) as writer:
                writer.write(data)
    except BaseException:
        _unlink(path)
        raise


def _read_block(path: str) -> pa.Table:
    """Maps the IPC stream at ``path`` (removing the file: the mapping keeps its memory
    until the last buffer of the result is freed) and reads it without copying."""
    source = pa.memory_map(path, "r")
    _unlink(path)
    return pa.ipc.open_stream(source).read_all()


# Blocks this small travel inside the socket message instead (one copy each way, as
# through a file, without creating, mapping and removing one: ~0.2 ms a call).
INLINE_BYTES = 64 * 1024


def _stage(batch: pa.RecordBatch):
    """The batch as the worker will read it: IPC bytes when small, else the path of a
    shared-memory file (the caller removes it)."""
    if batch.nbytes <= INLINE_BYTES:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write(batch)
        return sink.getvalue().to_pybytes()
    path = _new_path()
    _write_block(path, batch)
    return path


def _remove_prefixed(prefix: str) -> None:
    """Removes the shared-memory files whose names start with ``prefix``."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            _unlink(os.path.join(SHM_DIR, name))


def _remove_results(out_path: str) -> None:
    """Removes the result files ``<out_path>-<i>`` a failed chain call may have left."""
    _remove_prefixed(os.path.basename(out_path) + "-")


def _unstage(source) -> None:
    if isinstance(source, str):
        _unlink(source)


def _remove_stale_blocks() -> None:
    """Removes the blocks of driver processes that no longer exist (a killed driver)."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        if not name.startswith(SHM_PREFIX):
            continue
        pid = name[len(SHM_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _unlink(os.path.join(SHM_DIR, name))
        except PermissionError:
            pass


def _remove_own_blocks(epoch: Optional[int] = None) -> None:
    """Removes this process's blocks (of one epoch, or all)."""
    _remove_prefixed(os.path.basename(shm_prefix()) + ("" if epoch is None else f"{epoch}-"))


# ---- one worker process ----------------------------------------------------------------

class _Worker:
    """One worker process and the driver's end of its socket."""

    def __init__(self, env: Optional[dict] = None):
        parent, child = socket.socketpair()
        environment = dict(os.environ)
        # The worker imports what this process can import (the UDF's module, by reference).
        environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        environment.update(env or {})
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from millstream._worker_main import main; main()",
                 str(child.fileno())],
                pass_fds=(child.fileno(),), env=environment, stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.loaded: set = set()
        self.context_version = 0  # the version of the driver's DataContext it has

    @property
    def pid(self) -> int:
        return self.process.pid

    def request(self, message: tuple, out_path: Optional[str] = None) -> tuple:
        """Sends ``message`` and waits for the answer (the GIL is released while the
        socket is read). Raises _WorkerGone if the process dies first."""
        try:
            self.conn.send(message)
            reply = self.conn.recv()
        except (EOFError, OSError):
            self.stop()
            if out_path:
                _unlink(out_path)
            raise _WorkerGone(self.death()) from None
        if reply[0] == "err":
            if out_path:
                _unlink(out_path)
            raise _rebuild_error(reply, self.pid)
        return reply

    def call(self, key: str, payload: bytes, source) -> pa.Table:
        """Calls UDF ``key`` on the staged batch ``source`` (see _stage)."""
        out_path = _new_path()
        message = ("call", key, None if key in self.loaded else payload, source, out_path,
                   _context_message(self))
        reply = self.request(message, out_path)
        self.loaded.add(key)
        if reply[1] is not None:  # a small result, inside the reply
            return pa.ipc.open_stream(pa.py_buffer(reply[1])).read_all()
        return _read_block(out_path)

    def call_chain(self, parts: List["TaskUdf"], source) -> List[pa.Table]:
        """Calls the UDFs ``parts`` one after another on the staged batch ``source``; the
        results of the last one come back inline or in files ``<out>-<i>``."""
        out_path = _new_path()
        steps = tuple((p.key, None if p.key in self.loaded else p.payload, p.name) for p in parts)
        try:
            reply = self.request(("chain", steps, source, out_path, _context_message(self)))
        except BaseException:
            _remove_results(out_path)
            raise
        self.loaded.update(p.key for p in parts)
        return [pa.ipc.open_stream(pa.py_buffer(item)).read_all() if item is not None
                else _read_block(f"{out_path}-{i}") for i, item in enumerate(reply[1])]

    def death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return f"worker process {self.pid} stopped answering"
        if code < 0:
            try:
                how = signal.Signals(-code).name
            except ValueError:
                how = f"signal {-code}"
            return f"worker process {self.pid} was killed by {how}"
        return f"worker process {self.pid} exited with status {code}"

    def stop(self) -> None:
        """Ends the process (closing its socket ends its loop; a busy one is killed)."""
        _stop_all([self])


def _stop_all(workers: List[_Worker]) -> None:
    """Closes every worker's socket (an idle worker then leaves at once), gives them 0.1 s
    together, and kills those still inside a call."""
    for worker in workers:
        try:
            worker.conn.close()
        except OSError:
            pass
    deadline = time.monotonic() + 0.1
    for worker in workers:
        if worker.process.poll() is None:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def _rebuild_error(reply: tuple, pid: int) -> BaseException:
    """The exception a UDF raised in a worker, with the worker's traceback as a note."""
    _, pickled, type_name, message, text = reply
    exc = None
    if pickled is not None:
        try:
            import cloudpickle

            exc = cloudpickle.loads(pickled)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RuntimeError(f"{type_name}: {message}")
    _add_note(exc, f"Traceback in worker process {pid}:\n{text.rstrip()}")
    return exc


# ---- the pools -------------------------------------------------------------------------

class _TaskPool:
    """Workers shared by the task-pool UDFs of the running executions."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self.idle: List[_Worker] = []
        self.busy: set = set()
        self.starting = 0
        self.closed = False
        self.cond = threading.Condition()

    def acquire(self, name: str) -> _Worker:
        with self.cond:
            while True:
                if self.closed:
                    raise ExecutionEndedError(f"{name}: the execution has ended")
                if self.idle:
                    worker = self.idle.pop()
                    self.busy.add(worker)
                    return worker
                if len(self.busy) + self.starting < self.size:
                    # The first start starts them all: interpreters start in parallel
                    # (the engine runs an operator's first task alone, so waiting for a
                    # second call would start the second worker only after the first task).
                    count = self.size - self.starting if not self.busy else 1
                    self.starting += count
                    break
                self.cond.wait()
        workers = []
        try:
            for _ in range(count):
                workers.append(_Worker())
        finally:
            with self.cond:
                self.starting -= count
                if self.closed:
                    for extra in workers:
                        extra.stop()
                    workers = []
                elif workers:
                    self.busy.add(workers[0])
                    self.idle += workers[1:]
                    self.cond.notify_all()
        if not workers:
            raise ExecutionEndedError(f"{name}: the execution has ended")
        return workers[0]

    def release(self, worker: _Worker, alive: bool = True) -> None:
        with self.cond:
            self.busy.discard(worker)
            if alive and not self.closed:
                self.idle.append(worker)
                worker = None
            self.cond.notify()
        if worker is not None:
            worker.stop()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            workers = self.idle + list(self.busy)
            self.idle, self.busy = [], set()
            self.cond.notify_all()
        _stop_all(workers)


_lock = threading.RLock()  # re-entrant: a ProcessActor's __del__ may run inside it
_executions = 0  # executions running now
_epoch = 0  # counts the times executions started with none running (names block files)
_pool: Optional[_TaskPool] = None
_actors: "weakref.WeakSet[ProcessActor]" = weakref.WeakSet()
_gpu_use: dict = {}  # GPU id -> actors holding it


def _task_pool(name: str) -> _TaskPool:
    global _pool
    with _lock:
        if not _executions:
            raise ExecutionEndedError(f"{name}: the execution has ended")
        if _pool is None or _pool.closed:
            from millstream.context import DataContext, _cpu_count

            limit = DataContext.get_current().execution_options.resource_limits.cpu
            _pool = _TaskPool(int(limit) if limit else _cpu_count())
        return _pool


_context: list = [0, None, None]  # version, the driver's DataContext, its pickle (made once)


def _context_message(worker: "_Worker"):
    """The driver's DataContext for ``worker`` when it has not seen this version yet:
    (version, pickled context); else None. Workers answer DataContext.get_current() with
    the context the driver had when the execution started (pickled at its first call)."""
    with _lock:
        version, context, payload = _context
        if worker.context_version == version or context is None:
            return None
        if payload is None:
            import cloudpickle

            try:
                payload = cloudpickle.dumps(context)
            except Exception as exc:
                raise TypeError("python_udf_workers='processes': the current DataContext cannot be "
                                "sent to the worker processes, as cloudpickle cannot pickle it "
                                f"({type(exc).__name__}: {exc})") from exc
            _context[2] = payload
    worker.context_version = version
    return version, payload


def execution_started() -> None:
    """Called before an execution starts: its UDF calls may start workers, which see the
    DataContext current now."""
    global _executions, _epoch
    from millstream.context import DataContext

    context = DataContext.get_current()
    with _lock:
        if _context[1] is not context or _context[2] is not None:
            _context[:] = [_context[0] + 1, context, None]
        first = _executions == 0
        if first:
            _epoch += 1
        _executions += 1
    if first:
        _remove_stale_blocks()


def execution_ended() -> None:
    """Called once an execution is closed: the last one running stops every worker."""
    global _executions, _pool
    with _lock:
        _executions = max(0, _executions - 1)
        if _executions:
            return
        pool, _pool = _pool, None
        actors = list(_actors)
        epoch = _epoch
    if pool is not None:
        pool.close()
    for actor in actors:
        actor.closed = True
    _stop_all([a.worker for a in actors if a.worker is not None])
    for actor in actors:
        actor.close()
    _remove_own_blocks(epoch)  # none should be left; a call cut short may leave its input


def live_worker_pids() -> List[int]:
    """The pids of the worker processes alive now (for tests and diagnostics)."""
    with _lock:
        pool = _pool
        actors = list(_actors)
    pids = []
    if pool is not None:
        with pool.cond:
            pids += [w.pid for w in pool.idle + list(pool.busy)]
    pids += [a.worker.pid for a in actors if a.worker is not None]
    return pids


@atexit.register
def _shutdown() -> None:
    global _executions
    with _lock:
        _executions = 1
    execution_ended()
    _remove_own_blocks()


def _retries(name: str, key: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"{name}: {key} must be an int >= -1 (-1: no limit), got {value!r}")
    return value


def _pickle_udf(make_call: Callable, name: str) -> bytes:
    """The UDF as cloudpickle bytes, or a TypeError naming the operator."""
    import cloudpickle

    try:
        return cloudpickle.dumps(make_call)
    except Exception as exc:
        raise TypeError(f"{name}: the UDF cannot be sent to a worker process, as cloudpickle "
                        f"cannot pickle it ({type(exc).__name__}: {exc}); run it on threads "
                        "(DataContext.python_udf_workers = 'threads')") from exc


def _on_pool(name: str, max_retries: int, batch: pa.RecordBatch, call: Callable):
    """Runs ``call(worker, source)`` on a worker of the task pool with ``batch`` staged,
    again on another worker when one dies (up to ``max_retries`` times, -1: no limit)."""
    pool = _task_pool(name)
    source = _stage(batch)
    try:
        failures = 0
        while True:
            worker = pool.acquire(name)
            try:
                result = call(worker, source)
            except _WorkerGone as gone:
                pool.release(worker, alive=False)
                if pool.closed:
                    raise ExecutionEndedError(f"{name}: the execution has ended") from None
                failures += 1
                if max_retries != -1 and failures > max_retries:
                    raise WorkerDiedError(
                        f"{name}: {gone}; the task failed {failures} time(s) "
                        f"(max_retries={max_retries})") from None
                continue
            except BaseException:
                pool.release(worker)
                raise
            pool.release(worker)
            return result
    finally:
        _unstage(source)


class TaskUdf:
    """The callable the engine calls per batch for a function UDF in process mode."""

    def __init__(self, make_call: Callable[[], Callable], name: str, max_retries: int):
        self.payload = _pickle_udf(make_call, name)
        self.key = uuid.uuid4().hex
        self.name = name
        self.max_retries = max_retries

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        return _on_pool(self.name, self.max_retries, batch,
                        lambda worker, source: worker.call(self.key, self.payload, source))


class TaskChain:
    """Consecutive process-mode function UDFs fused into one operator: one round trip to
    a worker per batch, which runs every step there (each on every batch of the step
    before's output) and answers the last step's results, a list. A dead worker retries
    the whole chain, as many times as the most lenient step's ``max_retries`` allows."""

    def __init__(self, parts: List[TaskUdf]):
        self.parts = list(parts)
        self.name = "->".join(p.name for p in self.parts)
        retries = [p.max_retries for p in self.parts]
        self.max_retries = -1 if -1 in retries else max(retries)

    def __call__(self, batch: pa.RecordBatch) -> List[pa.Table]:
        return _on_pool(self.name, self.max_retries, batch,
                        lambda worker, source: worker.call_chain(self.parts, source))


class ActorFactory:
    """What the engine calls to make an actor in process mode: one worker process that
    constructs the class once (``make_instance``) and serves the actor's calls."""

    def __init__(self, make_instance: Callable[[], Callable], name: str, num_gpus: float,
                 max_restarts: int, max_task_retries: int):
        self.payload = _pickle_udf(make_instance, name)
        self.name = name
        self.num_gpus = num_gpus
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries

    def __call__(self) -> "ProcessActor":
        return ProcessActor(self)


def _gpu_ids() -> List[str]:
    """The GPUs actors are given: CUDA_VISIBLE_DEVICES's entries if set, else the NVIDIA
    driver's GPUs, as ids 0..N-1; ``resource_limits.gpu`` caps them (and, where fewer are
    found, names ids up to it, so the assignment can be checked without GPUs)."""
    from millstream.context import DataContext

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    else:
        try:
            ids = [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
        except OSError:
            ids = []
    limit = DataContext.get_current().execution_options.resource_limits.gpu
    if limit is not None:
        limit = int(limit)
        ids = ids[:limit] + [str(i) for i in range(len(ids), limit)]
    return ids


class ProcessActor:
    """One actor: a worker process holding the constructed class; one call at a time."""

    def __init__(self, factory: ActorFactory):
        with _lock:
            if not _executions:
                raise ExecutionEndedError(f"{factory.name}: the execution has ended")
        self.factory = factory
        self.worker: Optional[_Worker] = None
        self.restarts = 0
        self.closed = False
        self.lock = threading.Lock()
        self.gpus: List[str] = []
        if factory.num_gpus > 0:
            self.gpus = self._take_gpus(max(1, int(-(-factory.num_gpus // 1))))
        with _lock:
            _actors.add(self)
        self._start()

    def _take_gpus(self, count: int) -> List[str]:
        ids = _gpu_ids()
        if not ids:
            raise ValueError(f"{self.factory.name}: num_gpus={self.factory.num_gpus:g} but no GPU was "
                             "found (set DataContext.execution_options.resource_limits.gpu or "
                             "CUDA_VISIBLE_DEVICES)")
        from millstream import _core

        # Made on the engine actor's thread: its devices (get_gpu_ids()) are the ones it owns.
        owned = [ids[i] for i in _core.current_gpu_ids() if i < len(ids)]
        if owned:
            with _lock:
                for gpu in owned:
                    _gpu_use[gpu] = _gpu_use.get(gpu, 0) + 1
            return owned
        with _lock:  # the least used first, then by position
            order = sorted(range(len(ids)), key=lambda i: (_gpu_use.get(ids[i], 0), i))
            chosen = [ids[i] for i in sorted(order[:count])]
            for gpu in chosen:
                _gpu_use[gpu] = _gpu_use.get(gpu, 0) + 1
        return chosen

    def _start(self) -> None:
        env = ({"CUDA_VISIBLE_DEVICES": ",".join(self.gpus), "MILLSTREAM_GPU_IDS": ",".join(self.gpus)}
               if self.gpus else None)
        worker = _Worker(env)
        self.worker = worker
        try:
            worker.request(("init", "actor", self.factory.payload, _context_message(worker)))
        except _WorkerGone as gone:
            self.worker = None
            raise WorkerDiedError(f"{self.factory.name}: {gone} while constructing the actor") from None
        except BaseException:
            self.worker = None
            worker.stop()
            raise
        worker.loaded.add("actor")
        if self.closed:  # closed while it started
            self.worker = None
            worker.stop()
            raise ExecutionEndedError(f"{self.factory.name}: the execution has ended")

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        name = self.factory.name
        with self.lock:
            source = _stage(batch)
            try:
                failures = 0
                while True:
                    if self.closed:
                        raise ExecutionEndedError(f"{name}: the execution has ended")
                    if self.worker is None:
                        limit = self.factory.max_restarts
                        if limit != -1 and self.restarts >= limit:
                            raise WorkerDiedError(f"{name}: the actor's worker process died and "
                                                  f"max_restarts={limit} restarts are used up")
                        self.restarts += 1
                        self._start()
                    try:
                        return self.worker.call("actor", None, source)
                    except _WorkerGone as gone:
                        self.worker = None
                        failures += 1
                        if self.closed:
                            raise ExecutionEndedError(f"{name}: the execution has ended") from None
                        retries = self.factory.max_task_retries
                        if retries != -1 and failures > retries:
                            raise WorkerDiedError(
                                f"{name}: {gone}; the actor task failed {failures} time(s) "
                                f"(max_task_retries={retries})") from None
            finally:
                _unstage(source)

    def close(self) -> None:
        self.closed = True
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()
        with _lock:
            for gpu in self.gpus:
                _gpu_use[gpu] -= 1
            self.gpus = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def wrap(make_call: Callable, is_class: bool, name: str, num_gpus: float,
         remote_args: dict) -> Any:
    """The engine-facing callable for a UDF in process mode: ``make_call`` is the
    thread-mode target (a function of a batch, or for a class the function making the
    actor's callable)."""
    if is_class:
        restarts = _retries(name, "max_restarts", remote_args.get("max_restarts"), -1)
        task_retries = _retries(name, "max_task_retries", remote_args.get("max_task_retries"),
                                0 if restarts == 0 else -1)
        return ActorFactory(make_call, name, num_gpus, restarts, task_retries)
    retries = _retries(name, "max_retries", remote_args.get("max_retries"), 3)
    return TaskUdf(make_call, name, retries)
