"""The loop of a UDF worker process (see ``millstream._workers``).

Started as a fresh interpreter with the fd of its end of a socket pair. It receives
messages (pickled tuples) from the driver and answers each one:

Every message that may run user code carries ``context``: None, or (version, cloudpickle
of the driver's DataContext), which becomes the current DataContext here first.

- ``("init", key, payload, context)``: builds the UDF from ``payload`` (cloudpickle of a
  function that returns the callable), keeps it under ``key``; answers ``("ok",)``.
- ``("call", key, payload_or_None, source, out_path, context)``: builds the UDF first if the
  payload comes with the call, reads the Arrow IPC stream ``source`` (the bytes of a
  small batch, or the path of a shared-memory file, memory-mapped: zero-copy), calls the
  UDF on its batch and answers ``("ok", ipc_bytes)`` for a small result, else writes it
  as an IPC stream to ``out_path`` and answers ``("ok", None)``.
- ``("chain", ((key, payload_or_None, name), ...), source, out_path, context)``: the UDFs
  one after another (fused steps), each on every batch of the one before's output;
  answers ``("ok", [ipc_bytes or None, ...])``, the i-th result of the last UDF inline
  or in the file ``<out_path>-<i>``.
- A failure answers ``("err", pickled exception or None, type name, message, traceback)``.

The worker exits when the driver closes its end, or when the driver process is gone.
"""

import os
import signal
import sys
import threading
import time
import traceback

_current_paths = []  # the files of the call in progress (removed if the driver dies)
INLINE_BYTES = 64 * 1024  # as millstream._workers.INLINE_BYTES


def _watch_parent(parent: int) -> None:
    """Exits once the driver process is gone (killed), removing the current call's input
    and output: nobody else is left to remove them."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            for path in list(_current_paths):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            os._exit(1)


def _error_reply(exc: BaseException):
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickled = cloudpickle.dumps(exc)
    except Exception:  # an exception that does not pickle travels as its type name and text
        pickled = None
    return ("err", pickled, type(exc).__name__, str(exc), text)


def main() -> None:
    # Ctrl-C goes to the whole process group: the driver handles it and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(sys.argv[1])
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()

    from multiprocessing.connection import Connection

    import cloudpickle
    import pyarrow as pa

    import millstream  # noqa: F401  (registers the extension types blocks may carry)

    conn = Connection(fd)
    udfs = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = _handle(message, udfs, cloudpickle, pa)
        except BaseException as exc:  # noqa: BLE001  (the UDF's error goes back to the driver)
            reply = _error_reply(exc)
        _current_paths.clear()
        try:
            conn.send(reply)
        except OSError:
            return


def _use_context(context, cloudpickle) -> None:
    """Makes the driver's DataContext (version, pickle) the current one here."""
    if context is not None:
        from millstream.context import DataContext

        DataContext._set_current(cloudpickle.loads(context[1]))


def _load(udfs, key, payload, cloudpickle):
    if key not in udfs:
        if payload is None:
            raise RuntimeError("the worker process has no UDF for this call")
        udfs[key] = cloudpickle.loads(payload)()
    return udfs[key]


def _read(source, pa):
    # Zero-copy: the batch's buffers are slices of the mapped file.
    stream = pa.py_buffer(source) if isinstance(source, bytes) else pa.memory_map(source, "r")
    return pa.ipc.open_stream(stream).read_next_batch()


def _answer(result, path, pa):
    """IPC bytes of a small result, else None with the result written to ``path``."""
    if result.nbytes <= INLINE_BYTES:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, result.schema) as writer:
            writer.write(result)
        return sink.getvalue().to_pybytes()
    _current_paths.append(path)
    with pa.OSFile(path, "wb") as sink:
        with pa.ipc.new_stream(sink, result.schema) as writer:
            writer.write(result)
    return None


def _handle(message, udfs, cloudpickle, pa):
    kind = message[0]
    if kind == "init":
        _, key, payload, context = message
        _use_context(context, cloudpickle)
        udfs[key] = cloudpickle.loads(payload)()
        return ("ok", None)
    if kind == "chain":
        return _chain(message, udfs, cloudpickle, pa)
    if kind != "call":
        raise ValueError(f"unknown message {kind!r}")
    _, key, payload, source, out_path, context = message
    # Removed by the watchdog if the driver dies.
    _current_paths[:] = [source, out_path] if isinstance(source, str) else [out_path]
    _use_context(context, cloudpickle)
    udf = _load(udfs, key, payload, cloudpickle)
    batch = _read(source, pa)
    result = udf(batch)
    del batch
    return ("ok", _answer(result, out_path, pa))


def _chain(message, udfs, cloudpickle, pa):
    """Runs several UDFs one after another on one batch (fused steps: one round trip);
    answers the last one's results, the i-th inline or in the file ``<out_path>-<i>``."""
    from millstream._udf_chain import batches_of, note

    _, steps, source, out_path, context = message
    _current_paths[:] = [source] if isinstance(source, str) else []
    _use_context(context, cloudpickle)
    fns = [(_load(udfs, key, payload, cloudpickle), name) for key, payload, name in steps]
    outs = [_read(source, pa)]
    for k, (fn, name) in enumerate(fns):
        if k:
            outs = [piece for out in outs for piece in batches_of(out, fns[k - 1][1])]
        results = []
        for batch in outs:
            try:
                results.append(fn(batch))
            except BaseException as exc:
                note(exc, name)
                raise
        outs = results
    written = len(_current_paths)
    try:
        return ("ok", [_answer(out, f"{out_path}-{i}", pa) for i, out in enumerate(outs)])
    except BaseException:
        for path in _current_paths[written:]:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise


if __name__ == "__main__":
    main()
