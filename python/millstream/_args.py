"""Argument checks shared by every public call.

- ``nearest``: the valid name a misspelt one most likely meant.
- ``check_int`` / ``check_number``: counts and amounts, checked before they reach the
  engine (numpy integers accepted; bools, nan, inf and values past 64 bits refused).
- ``check_names``: column names are strings (not something pybind would refuse obscurely);
  ``check_columns``/``check_renames`` with Ray's error types, so code catching them still works.
- ``public``: the decorator on every public function and method. An unknown keyword
  raises TypeError naming the nearest valid one; a parameter Ray has but this engine does
  not implement raises NotImplementedError unless it is at the value whose behaviour is
  what happens here anyway; a ``**`` passthrough (``**ray_remote_args``,
  ``**arrow_parquet_args``...) is checked key by key against what the library behind it
  accepts (see ``Passthrough``).
"""

from __future__ import annotations

import difflib
import enum
import functools
import inspect
import math
from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np


def _words(name: str) -> list:
    return [w for w in name.lower().split("_") if w] or [name.lower()]


def _word_similarity(a: list, b: list) -> float:
    """How well the words of ``a`` and ``b`` match each other, in [0, 1], ignoring order:
    each word is paired with its most similar word on the other side, both ways."""
    def one_way(xs, ys):
        return sum(max(difflib.SequenceMatcher(None, x, y).ratio() for y in ys) for x in xs) / len(xs)
    return (one_way(a, b) + one_way(b, a)) / 2


def nearest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate ``name`` most likely meant, or None when none is close.

    Names are compared word by word (words split on ``_``, in any order, each matched to
    its most similar counterpart) so that ``enable_op_resource_reservation`` finds
    ``op_resource_reservation_enabled`` rather than ``op_resource_reservation_ratio``; the
    similarity of the whole strings breaks ties.
    """
    words = _words(name)
    best, best_score = None, None
    for candidate in candidates:
        whole = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
        by_words = _word_similarity(words, _words(candidate))
        if max(whole, by_words) < 0.6:
            continue
        score = (by_words, whole)
        if best_score is None or score > best_score:
            best, best_score = candidate, score
    return best


def unknown_keyword(fn_name: str, key: str, valid: Iterable[str]) -> TypeError:
    valid = sorted(set(valid))
    close = nearest(key, valid)
    if close:
        hint = f"; did you mean '{close}'?"
    else:
        hint = f"; valid keywords: {', '.join(valid)}" if valid else "; it takes none"
    return TypeError(f"{fn_name}() got an unexpected keyword argument '{key}'{hint}")


class Unsupported:
    """A parameter (or passthrough key) Ray has and this engine does not implement: the
    call runs only while its value is one of ``accepted`` (those whose behaviour is what
    this engine does anyway), else NotImplementedError saying ``why``."""

    def __init__(self, *accepted: Any, why: str = "not implemented yet"):
        self.accepted = accepted
        self.why = why

    def check(self, fn_name: str, name: str, value: Any) -> None:
        if isinstance(value, enum.Enum):  # such as Ray's SaveMode
            value = value.value
        for ok in self.accepted:
            if value is ok or (type(value) is type(ok) and value == ok):
                return
        allowed = " or ".join(repr(a) for a in self.accepted)
        raise NotImplementedError(f"{fn_name}: {name}={value!r} is not supported ({self.why})"
                                  + (f"; supported: {allowed}" if allowed else ""))


NEVER = Unsupported  # NEVER(why=...): a name the library knows, no value of it implemented


class Passthrough:
    """What a ``**kwargs`` passthrough accepts, key by key.

    ``honoured``: keys handed on to the function body, which implements them.
    ``no_effect``: keys Ray accepts that change nothing on one machine (placement,
    retries after a node failure...): accepted, documented as having no effect here.
    ``unsupported``: key -> ``Unsupported`` rule.
    Any other key raises TypeError naming the nearest valid name.
    """

    def __init__(self, name: str, *, honoured: Iterable[str] = (), no_effect: Iterable[str] = (),
                 unsupported: Optional[Dict[str, Unsupported]] = None):
        self.name = name
        self.honoured = frozenset(honoured)
        self.no_effect = frozenset(no_effect)
        self.unsupported = dict(unsupported or {})
        self.keys = self.honoured | self.no_effect | frozenset(self.unsupported)

    def check(self, fn_name: str, extra: Dict[str, Any], named: Iterable[str] = ()) -> None:
        for key, value in extra.items():
            if key in self.honoured or key in self.no_effect:
                continue
            rule = self.unsupported.get(key)
            if rule is None:
                raise unknown_keyword(fn_name, key, set(named) | self.keys)
            rule.check(fn_name, key, value)

    def rule(self) -> Callable[[str, str, Any], None]:
        """An ``unsupported=`` rule for a parameter that takes a dict of these keys
        (``read_parquet(ray_remote_args={...})``)."""
        def check(fn_name, name, value):
            if value is None:
                return
            if not isinstance(value, dict):
                raise TypeError(f"{fn_name}: {name} must be a dict, got {type(value).__name__}")
            self.check(f"{fn_name}({name}=...)", value)
        return check


# ---- Ray's remote options (``**ray_remote_args``), as in Ray 2.58 ----------------------

# Placement, naming, and recovery from node or worker-process failures: they mean something
# on a Ray cluster; in one process there is nothing to place and no worker to lose.
# (max_retries, max_restarts, max_task_retries take effect for UDFs in worker processes,
# DataContext.python_udf_workers = "processes": see millstream._workers.)
RAY_REMOTE_ARGS_WITHOUT_EFFECT = frozenset({
    "accelerator_type", "allow_out_of_order_execution", "concurrency_groups",
    "enable_task_events", "enable_tensor_transport", "fallback_strategy", "get_if_exists",
    "label_selector", "lifetime", "max_calls", "max_pending_calls", "max_restarts",
    "max_retries", "max_task_retries", "name", "namespace", "num_returns",
    "object_store_memory", "placement_group", "placement_group_bundle_index",
    "placement_group_capture_child_tasks", "scheduling_strategy", "_labels",
    "_generator_backpressure_num_objects", "_num_objects_per_yield",
    "_actor_generator_backpressure_num_objects",
})
_REMOTE_UNSUPPORTED = {
    "resources": Unsupported(None, {}, why="custom resources are not modelled; only num_cpus, num_gpus and memory"),
    "runtime_env": Unsupported(None, {}, why="UDFs run in this process, in its environment"),
    "retry_exceptions": Unsupported(None, False, why="a failed task is not retried; see DataContext.max_errored_blocks"),
}
_RESOURCES = ("num_cpus", "num_gpus", "memory")

# Tasks of maps: num_cpus / num_gpus / memory are slots a task holds while it runs;
# max_concurrency is how many tasks one actor runs at once.
RAY_REMOTE_ARGS = Passthrough("ray_remote_args", honoured=_RESOURCES + ("max_concurrency",),
                              no_effect=RAY_REMOTE_ARGS_WITHOUT_EFFECT, unsupported=_REMOTE_UNSUPPORTED)
# Steps that run inside the engine's vectorised operators, not as tasks of their own
# (select/drop/rename columns, reads, writes): a resource request has nothing to apply to.
_NOT_A_TASK = "this step runs inside the engine's operators, not as a task with its own resources"
RAY_REMOTE_ARGS_NO_TASK = Passthrough(
    "ray_remote_args", no_effect=RAY_REMOTE_ARGS_WITHOUT_EFFECT,
    unsupported={**_REMOTE_UNSUPPORTED,
                 **{r: Unsupported(None, why=_NOT_A_TASK) for r in _RESOURCES + ("max_concurrency",)}})

# ---- pyarrow's Parquet, CSV and pandas' JSON options ---------------------------------

_READER_KNOWS = ("not supported by this engine's Parquet reader yet; it takes columns, filter, "
                 "partitioning and file_extensions")
# What Ray's read_parquet hands to pyarrow (dataset_kwargs, schema, and the scanner's
# to_batches options); ``filter`` is a named parameter here.
PARQUET_READ_ARGS = Passthrough("arrow_parquet_args", honoured=("schema",), unsupported={
    key: NEVER(why=_READER_KNOWS) for key in (
        "dataset_kwargs", "batch_size", "batch_readahead", "fragment_readahead",
        "fragment_scan_options", "cache_metadata", "memory_pool", "_block_udf")} | {
    "use_threads": Unsupported(True, why="the reader's own threading is not configurable"),
})

_WRITER_KNOWS = "not supported by this engine's Parquet writer yet"
# pyarrow.parquet.write_table's options (pyarrow 25), which Ray's write_parquet passes on.
# The engine's Parquet writer applies compression, compression_level, row_group_size,
# use_dictionary, write_statistics, version, data_page_size and schema.
PARQUET_WRITE_ARGS = Passthrough("arrow_parquet_args", honoured=(
    "compression", "compression_level", "row_group_size", "use_dictionary", "write_statistics",
    "version", "data_page_size", "schema"), unsupported={
    key: NEVER(why=_WRITER_KNOWS) for key in (
        "use_deprecated_int96_timestamps", "coerce_timestamps", "allow_truncated_timestamps",
        "flavor", "use_byte_stream_split",
        "column_encoding", "data_page_version", "use_compliant_nested_type",
        "encryption_properties", "write_batch_size", "dictionary_pagesize_limit",
        "store_schema", "write_page_index", "write_page_checksum", "sorting_columns",
        "store_decimal_as_integer", "write_time_adjusted_to_utc", "max_rows_per_page",
        "bloom_filter_options", "partitioning_flavor")})
# pyarrow.csv.write_csv's options: write_options (a pyarrow.csv.WriteOptions) is applied
# by the engine's CSV writer.
CSV_WRITE_ARGS = Passthrough("arrow_csv_args", honoured=("write_options",), unsupported={
    "memory_pool": NEVER(why="the engine's memory pool is not configurable"),
})
# pandas.DataFrame.to_json's options; Ray writes orient="records", lines=True.
JSON_WRITE_ARGS = Passthrough("pandas_json_args", unsupported={
    "orient": Unsupported("records", why="JSON Lines: one object per row"),
    "lines": Unsupported(True, why="JSON Lines: one object per row"),
} | {key: NEVER(why="JSON Lines are written by Arrow, not pandas") for key in (
    "path_or_buf", "date_format", "double_precision", "force_ascii", "date_unit",
    "default_handler", "compression", "index", "indent", "storage_options", "mode")})


# ---- the decorator ---------------------------------------------------------------------

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def public(fn: Optional[Callable] = None, *, passthrough: Optional[Passthrough] = None,
           unsupported: Optional[Dict[str, Any]] = None, name: Optional[str] = None):
    """Checks the keywords of every call of ``fn`` before it runs (see the module doc).

    ``unsupported`` maps a keyword parameter to an ``Unsupported`` rule or to a function
    ``check(fn_name, param, value)`` that raises; it applies when the keyword is given.
    A function with ``**kwargs`` must say what they accept (``passthrough``).
    """
    def decorate(fn):
        params = inspect.signature(fn).parameters
        keywords = frozenset(n for n, p in params.items()
                             if p.kind in _KEYWORD_KINDS and n not in ("self", "cls"))
        var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if var_keyword != (passthrough is not None):
            raise AssertionError(f"{fn.__qualname__}: **kwargs needs a passthrough and only they do")
        rules = {}
        for param, rule in (unsupported or {}).items():
            if param not in keywords:
                raise AssertionError(f"{fn.__qualname__} has no keyword parameter {param}")
            rules[param] = rule.check if isinstance(rule, Unsupported) else rule
        fn_name = name or fn.__qualname__.replace(".__init__", "")

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            if kwargs:
                extra = None
                for key, value in kwargs.items():
                    if key in keywords:
                        rule = rules.get(key)
                        if rule is not None:
                            rule(fn_name, key, value)
                    elif passthrough is None:
                        raise unknown_keyword(fn_name, key, keywords)
                    else:
                        extra = extra or {}
                        extra[key] = value
                if extra:
                    passthrough.check(fn_name, extra, keywords)
            return _record_lineage(fn, args, kwargs, fn(*args, **kwargs))

        return checked

    return decorate(fn) if fn is not None else decorate


# ---- lineage ---------------------------------------------------------------------------

class Lineage:
    """How a Dataset (or GroupedData) was made: ``parent`` (the lineage of the object the
    method was called on, None for a source), the public callable's module and qualified
    name, and the arguments of the call. Recorded by ``public`` for every call that returns
    one, so the Ray backend (millstream.ray_backend) can replay a plan in its workers.
    A materialized dataset is its own source: ``materialized`` holds its engine plan (or, for
    a dataset made without a public call, the dataset)."""

    __slots__ = ("parent", "module", "name", "args", "kwargs", "materialized", "executions")

    def __init__(self, parent, module, name, args, kwargs, materialized=None):
        self.parent, self.module, self.name = parent, module, name
        self.args, self.kwargs, self.materialized = args, kwargs, materialized
        self.executions = 0  # executions of a seeded call on Ray (ray_backend.planner.execution_seed)

    @property
    def method(self) -> str:
        return self.name.rpartition(".")[2]


_TRACED = ("Dataset", "MaterializedDataset", "GroupedData")


def _record_lineage(fn, args, kwargs, result):
    if type(result).__name__ not in _TRACED or not type(result).__module__.startswith("millstream"):
        return result
    from millstream import _auto_workers

    _auto_workers.inherit(result, args, kwargs)
    if type(result).__name__ == "MaterializedDataset":
        # Its engine plan, not itself: no reference cycle keeps its blocks alive.
        result._lineage = Lineage(None, fn.__module__, fn.__qualname__, (), {}, materialized=result._core)
        return result
    method = "." in fn.__qualname__ and bool(args)
    parent = None
    if method:
        # A dataset made without a public call (internally) is a source run on the driver.
        parent = getattr(args[0], "_lineage", None) or Lineage(None, "", "<local>", (), {}, materialized=args[0])
    result._lineage = Lineage(parent, fn.__module__, fn.__qualname__, args[1:] if method else args, kwargs)
    return result


def check_expr_filter(expr: Any, given: Dict[str, Any]) -> None:
    """``filter(expr=...)`` runs vectorised inside the engine: the arguments of a function
    filter (``given``: filter's parameters) have nothing to apply to."""
    if expr is None:
        return
    for key in ("fn_args", "fn_kwargs", "fn_constructor_args", "fn_constructor_kwargs"):
        if given.get(key) is not None:
            raise ValueError("when 'expr' is used, 'fn_args/fn_kwargs' or 'fn_constructor_args/fn_constructor_kwargs' "
                             f"cannot be used (got {key})")
    for key in ("compute", "num_cpus", "num_gpus", "memory", "concurrency", "ray_remote_args_fn"):
        if given.get(key) is not None:
            raise NotImplementedError(
                f"Dataset.filter: {key}={given[key]!r} is not supported with expr (an expression "
                "filter runs inside the engine's operators, not as a task of its own)")
    RAY_REMOTE_ARGS_NO_TASK.check("Dataset.filter", given.get("ray_remote_args") or {})


# ---- numbers ---------------------------------------------------------------------------

INT64_MAX = 2**63 - 1


def _bound(value) -> str:
    return f"{INT64_MAX} (2**63-1)" if value == INT64_MAX else f"{value:g}"


def check_int(fn_name: str, name: str, value: Any, *, min: int = 0, max: int = INT64_MAX,  # noqa: A002
              none_ok: bool = False) -> Optional[int]:
    """``value`` as a Python int: an int or a numpy integer (not a bool, not a float), in
    [min, max] (the engine counts in signed 64 bits). TypeError or ValueError otherwise."""
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn_name}: {name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < min or value > max:
        bound = f"at least {min}" if value < min else f"at most {_bound(max)}"
        raise ValueError(f"{fn_name}: {name} must be {bound}, got {value}")
    return value


def check_number(fn_name: str, name: str, value: Any, *, min: float = 0.0,  # noqa: A002
                 max: float = INT64_MAX, none_ok: bool = False) -> Optional[float]:
    """``value`` as a float: an int, float or numpy number (not a bool), finite (no nan or
    inf), in [min, max]. TypeError or ValueError otherwise."""
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn_name}: {name} must be a number, got {value!r} ({type(value).__name__})")
    # Ints stay ints for the range check: Python compares ints and floats exactly.
    exact = int(value) if isinstance(value, (int, np.integer)) else float(value)
    if isinstance(exact, float) and not math.isfinite(exact):
        raise ValueError(f"{fn_name}: {name} must be a finite number, got {value!r}")
    if exact < min or exact > max:
        bound = f"at least {min:g}" if exact < min else f"at most {_bound(max)}"
        raise ValueError(f"{fn_name}: {name} must be {bound}, got {value!r}")
    return float(exact)


def check_names(fn_name: str, name: str, value: Any, *, none_ok: bool = False) -> Optional[list]:
    """Column names (or file extensions): one string or a list of strings, as a list."""
    if value is None and none_ok:
        return None
    names = [value] if isinstance(value, str) else value
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return list(names)
    raise TypeError(f"{fn_name}: {name} must be a string or a list of strings, got {value!r}")


def check_columns(fn_name: str, cols: Any) -> list:
    """``select_columns``' argument: a string or a list of distinct strings. Errors have
    Ray's types and words (so code matching them keeps working): ``TypeError`` for
    another container, ``ValueError`` for a list with something else in it or a name twice."""
    if isinstance(cols, str):
        return [cols]
    if not isinstance(cols, list):
        raise TypeError(f"select_columns requires 'cols' to be a string or a list of strings, got {cols!r}")
    if not all(isinstance(c, str) for c in cols):
        raise ValueError(f"select_columns requires all elements of 'cols' to be strings, got {cols!r}")
    if len(set(cols)) != len(cols):
        raise ValueError(f"select_columns expected unique column names, got duplicate column names: {cols}")
    return cols


def check_renames(fn_name: str, names: Any) -> None:
    """``rename_columns``' argument: a non-empty dict of strings to distinct strings, or a
    non-empty list of distinct strings. Errors have Ray's types and words, checked in
    Ray's order: ``TypeError`` for anything else, ``ValueError`` for an empty one, a new
    name twice, or a non-string."""
    if isinstance(names, dict):
        if not names:
            raise ValueError("rename_columns received 'names' with no entries.")
        new = list(names.values())
        strings = all(isinstance(k, str) and isinstance(v, str) for k, v in names.items())
        not_strings = "rename_columns requires both keys and values in the 'names' to be strings"
    elif isinstance(names, list):
        if not names:
            raise ValueError("rename_columns requires 'names' with at least one column name.")
        new = names
        strings = all(isinstance(n, str) for n in names)
        not_strings = "rename_columns requires all elements in the 'names' to be strings"
    else:
        raise TypeError(f"rename_columns expected names to be either List[str] or Dict[str, str], "
                        f"got {type(names)}: {names!r}")
    if len(set(map(repr, new))) != len(new):
        duplicates = sorted({repr(n) for n in new if new.count(n) > 1})
        raise ValueError(f"rename_columns received duplicate values in the 'names': {names} "
                         f"({', '.join(duplicates)} more than once)")
    if not strings:
        raise ValueError(f"{not_strings}, got {names!r}")
