"""Consecutive Python UDFs fused into one operator, called as one step.

The engine joins the task-pool UDF steps of a fused operator (``BatchUdf::Then``) and
calls ``chain(fns, names)``'s result once per block: one entry into Python, one
conversion of the block in and of the results out, instead of one of each per UDF. Each
step is called on every batch of the step before's output, in order, empty batches
skipped: what the engine did between separate steps. Consecutive steps that run in
worker processes (``millstream._workers.TaskUdf``) go to a worker together, one round
trip for all of them.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import pyarrow as pa


def add_note(exc: BaseException, text: str) -> None:
    """``exc.add_note(text)``, also on Python 3.10 (which has no add_note)."""
    if hasattr(exc, "add_note"):
        exc.add_note(text)
    else:
        try:
            exc.__notes__ = getattr(exc, "__notes__", []) + [text]
        except AttributeError:
            pass


def note(exc: BaseException, name: str) -> None:
    add_note(exc, f"(raised in millstream operator {name})")


def batches_of(result, name: str) -> List[pa.RecordBatch]:
    """The non-empty batches of a step's result, in order (as the engine cuts a table)."""
    if type(result) is pa.Table:
        return result.to_batches()
    if type(result) is pa.RecordBatch:
        return [result] if result.num_rows else []
    if hasattr(result, "__arrow_c_stream__") or hasattr(result, "__arrow_c_array__"):
        return pa.table(result).to_batches()
    raise TypeError(f"{name}: expected Arrow data (a pyarrow Table or RecordBatch), "
                    f"got {type(result).__name__}")


def _one(fn: Callable, name: str) -> Callable:
    """A step of one function, answering a list of its one result; its errors are noted
    with its operator's name."""
    def call(batch):
        try:
            return [fn(batch)]
        except BaseException as exc:
            note(exc, name)
            raise
    return call


def steps_of(fns: Sequence[Callable], names: Sequence[str]) -> list:
    """The chain's steps, (a callable of a batch answering a list of results, the name
    of the operator whose output it answers): one per
    function, except that runs of consecutive worker-process functions become one step
    (``_workers.TaskChain``: one round trip to a worker for all of them)."""
    from millstream import _workers

    steps, run = [], []
    for fn, name in list(zip(fns, names)) + [(None, None)]:
        if isinstance(fn, _workers.TaskUdf):
            run.append((fn, name))
            continue
        if len(run) == 1:
            steps.append((_one(*run[0]), run[0][1]))
        elif run:
            steps.append((_workers.TaskChain([f for f, _ in run]), run[-1][1]))
        run = []
        if fn is not None:
            steps.append((_one(fn, name), name))
    return steps


def chain(fns: Sequence[Callable], names: Sequence[str]) -> Callable:
    """One callable running ``fns`` one after another on a batch; it returns the list of
    the last step's results (one per batch that step was called on)."""
    steps = steps_of(fns, names)
    if len(steps) == 1:
        return steps[0][0]
    rest = [(steps[k][0], steps[k - 1][1]) for k in range(1, len(steps))]

    def run_from(k, outs):
        """The general case from step k on: any number of results per call."""
        for step, before in rest[k - 1:]:
            batches = [piece for out in outs for piece in batches_of(out, before)]
            outs = []
            for piece in batches:
                outs += step(piece)
        return outs

    if len(steps) != len(fns):  # a run of worker-process steps: the general case
        first = steps[0][0]
        return lambda batch: run_from(1, first(batch))

    fns, names = list(fns), list(names)
    count = len(fns)

    def run(batch):
        # The common case without lists: each step's result is one batch's worth.
        k = 0
        try:
            out = fns[0](batch)
            for k in range(1, count):
                pieces = out.to_batches() if type(out) is pa.Table else None
                if pieces is None or len(pieces) != 1:
                    break
                out = fns[k](pieces[0])
            else:
                return [out]
        except BaseException as exc:
            note(exc, names[k])
            raise
        return run_from(k, [out])  # several (or no) batches, or not a Table

    return run
