"""Column expressions with Ray Data's names (``ray.data.expressions``): ``col``, ``lit``,
arithmetic, comparisons, boolean operators, null tests, ``is_in``, math, ``cast``,
``alias`` and the ``.str``, ``.dt``, ``.list`` and ``.struct`` namespaces.

    from millstream.expressions import col, lit
    ds.with_column("total", col("price") * col("qty")).filter(expr=col("total") > 100)

An expression becomes an Arrow compute expression (``to_pyarrow()``), which the engine
evaluates natively on its worker threads, without Python and without the GIL.
Semantics, as Python's (and numpy's) where Arrow's differ: ``/`` is true division (a
float64 result, also for integers), ``//`` and ``%`` floor division and its remainder
(float64 results); integer ``+ - *`` raise on overflow instead of wrapping. ``&``, ``|``
and ``~`` are the boolean operators (Kleene logic for nulls); ``and``/``or``/``not`` and
``if expr:`` raise ``TypeError``, since Python cannot hand them to an expression.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from millstream._args import public

__all__ = [
    "Operation", "Expr", "ColumnExpr", "LiteralExpr", "BinaryExpr", "UnaryExpr", "AliasExpr",
    "FunctionExpr", "StarExpr", "col", "lit", "star", "udf", "pyarrow_udf", "download",
    "monotonically_increasing_id",
]


class Operation(str, enum.Enum):
    """The operations of BinaryExpr and UnaryExpr nodes."""

    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MOD = "mod"
    FLOORDIV = "floordiv"
    GT = "gt"
    LT = "lt"
    GE = "ge"
    LE = "le"
    EQ = "eq"
    NE = "ne"
    AND = "and"
    OR = "or"
    NOT = "not"
    IS_NULL = "is_null"
    IS_NOT_NULL = "is_not_null"
    IN = "in"
    NOT_IN = "not_in"


def _as_expr(value: Any) -> "Expr":
    return value if isinstance(value, Expr) else LiteralExpr(value)


def _float(e: pc.Expression) -> pc.Expression:
    return e.cast(pa.float64())


def _floordiv(a: pc.Expression, b: pc.Expression) -> pc.Expression:
    return pc.Expression._call("floor", [pc.Expression._call("divide", [_float(a), _float(b)])])


_BINARY = {
    Operation.ADD: lambda a, b: a + b,
    Operation.SUB: lambda a, b: a - b,
    Operation.MUL: lambda a, b: a * b,
    Operation.DIV: lambda a, b: pc.Expression._call("divide", [_float(a), _float(b)]),
    Operation.FLOORDIV: _floordiv,
    Operation.MOD: lambda a, b: pc.Expression._call(
        "subtract", [_float(a), pc.Expression._call("multiply", [_float(b), _floordiv(a, b)])]),
    Operation.GT: lambda a, b: a > b,
    Operation.LT: lambda a, b: a < b,
    Operation.GE: lambda a, b: a >= b,
    Operation.LE: lambda a, b: a <= b,
    Operation.EQ: lambda a, b: a == b,
    Operation.NE: lambda a, b: a != b,
    Operation.AND: lambda a, b: a & b,
    Operation.OR: lambda a, b: a | b,
}

_UNARY = {
    Operation.NOT: lambda a: ~a,
    Operation.IS_NULL: lambda a: a.is_null(),
    Operation.IS_NOT_NULL: lambda a: a.is_valid(),
}


def _arrow_type(target_type: Any) -> pa.DataType:
    """A pyarrow type from a pyarrow type, a name ("int32", "string") or an object with
    ``to_arrow_dtype()`` (Ray's DataType)."""
    if isinstance(target_type, pa.DataType):
        return target_type
    if hasattr(target_type, "to_arrow_dtype"):
        return target_type.to_arrow_dtype()
    if isinstance(target_type, str):
        try:
            return pa.type_for_alias(target_type)
        except ValueError:
            raise ValueError(f"cast: unknown type name {target_type!r}") from None
    raise TypeError(f"cast: target_type must be a pyarrow DataType or a type name, got {target_type!r}")


@dataclass(frozen=True, eq=False)
class Expr:
    """A node of a column expression. Build them with ``col``, ``lit`` and operators."""

    def to_pyarrow(self) -> pc.Expression:
        """This expression as a ``pyarrow.compute.Expression``."""
        raise NotImplementedError

    def structurally_equals(self, other: Any) -> bool:
        """Whether ``other`` is the same expression tree."""
        return type(self) is type(other) and self._key() == other._key()

    def _key(self) -> tuple:
        return ()

    @property
    def name(self) -> Optional[str]:
        """The name this expression's column gets (a column's or an alias'), else None."""
        return None

    def __bool__(self):
        raise TypeError("an expression has no truth value: combine conditions with & | ~ "
                        "(not and/or/not), each in parentheses")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_pyarrow()})"

    # arithmetic
    def _bin(self, other: Any, op: Operation) -> "BinaryExpr":
        return BinaryExpr(op, self, _as_expr(other))

    def _rbin(self, other: Any, op: Operation) -> "BinaryExpr":
        return BinaryExpr(op, _as_expr(other), self)

    def __add__(self, other): return self._bin(other, Operation.ADD)  # noqa: E704
    def __radd__(self, other): return self._rbin(other, Operation.ADD)  # noqa: E704
    def __sub__(self, other): return self._bin(other, Operation.SUB)  # noqa: E704
    def __rsub__(self, other): return self._rbin(other, Operation.SUB)  # noqa: E704
    def __mul__(self, other): return self._bin(other, Operation.MUL)  # noqa: E704
    def __rmul__(self, other): return self._rbin(other, Operation.MUL)  # noqa: E704
    def __truediv__(self, other): return self._bin(other, Operation.DIV)  # noqa: E704
    def __rtruediv__(self, other): return self._rbin(other, Operation.DIV)  # noqa: E704
    def __floordiv__(self, other): return self._bin(other, Operation.FLOORDIV)  # noqa: E704
    def __rfloordiv__(self, other): return self._rbin(other, Operation.FLOORDIV)  # noqa: E704
    def __mod__(self, other): return self._bin(other, Operation.MOD)  # noqa: E704
    def __rmod__(self, other): return self._rbin(other, Operation.MOD)  # noqa: E704
    def __neg__(self): return self.negate()  # noqa: E704

    # comparison
    def __gt__(self, other): return self._bin(other, Operation.GT)  # noqa: E704
    def __lt__(self, other): return self._bin(other, Operation.LT)  # noqa: E704
    def __ge__(self, other): return self._bin(other, Operation.GE)  # noqa: E704
    def __le__(self, other): return self._bin(other, Operation.LE)  # noqa: E704
    def __eq__(self, other): return self._bin(other, Operation.EQ)  # noqa: E704
    def __ne__(self, other): return self._bin(other, Operation.NE)  # noqa: E704

    # boolean
    def __and__(self, other): return self._bin(other, Operation.AND)  # noqa: E704
    def __rand__(self, other): return self._rbin(other, Operation.AND)  # noqa: E704
    def __or__(self, other): return self._bin(other, Operation.OR)  # noqa: E704
    def __ror__(self, other): return self._rbin(other, Operation.OR)  # noqa: E704
    def __invert__(self): return UnaryExpr(Operation.NOT, self)  # noqa: E704

    __hash__ = None  # == builds an expression

    # predicates
    def is_null(self) -> "UnaryExpr":
        """True where the value is null."""
        return UnaryExpr(Operation.IS_NULL, self)

    def is_not_null(self) -> "UnaryExpr":
        """True where the value is not null."""
        return UnaryExpr(Operation.IS_NOT_NULL, self)

    def is_in(self, values) -> "BinaryExpr":
        """True where the value is one of ``values`` (a list, or a literal list)."""
        return BinaryExpr(Operation.IN, self, _values(values, "is_in"))

    def not_in(self, values) -> "BinaryExpr":
        """True where the value is none of ``values``."""
        return BinaryExpr(Operation.NOT_IN, self, _values(values, "not_in"))

    # naming and types
    def alias(self, name: str) -> "AliasExpr":
        """The same values under column name ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"alias: name must be a string, got {name!r}")
        return AliasExpr(self, name)

    def cast(self, target_type, safe: bool = True) -> "FunctionExpr":
        """The values cast to ``target_type`` (a pyarrow type or a name such as "int32");
        ``safe``: raise on overflow or truncation instead of wrapping."""
        kind = _arrow_type(target_type)
        options = pc.CastOptions.safe(kind) if safe else pc.CastOptions.unsafe(kind)
        return FunctionExpr("cast", (self,), options)

    # math
    def _call(self, function: str, *args, options=None) -> "FunctionExpr":
        return FunctionExpr(function, (self,) + tuple(_as_expr(a) for a in args), options)

    def abs(self): return self._call("abs_checked")  # noqa: E704
    def negate(self): return self._call("negate_checked")  # noqa: E704
    def sign(self): return self._call("sign")  # noqa: E704
    def ceil(self): return self._call("ceil")  # noqa: E704
    def floor(self): return self._call("floor")  # noqa: E704
    def trunc(self): return self._call("trunc")  # noqa: E704
    def sqrt(self): return self._call("sqrt_checked")  # noqa: E704
    def exp(self): return self._call("exp")  # noqa: E704
    def ln(self): return self._call("ln_checked")  # noqa: E704
    def log10(self): return self._call("log10_checked")  # noqa: E704
    def log2(self): return self._call("log2_checked")  # noqa: E704
    def sin(self): return self._call("sin_checked")  # noqa: E704
    def cos(self): return self._call("cos_checked")  # noqa: E704
    def tan(self): return self._call("tan_checked")  # noqa: E704
    def asin(self): return self._call("asin_checked")  # noqa: E704
    def acos(self): return self._call("acos_checked")  # noqa: E704
    def atan(self): return self._call("atan")  # noqa: E704

    def round(self, decimals: int = 0) -> "FunctionExpr":
        """Rounded to ``decimals`` places, halves to even (as Python's round)."""
        return self._call("round", options=pc.RoundOptions(decimals, "half_to_even"))

    def power(self, exponent) -> "FunctionExpr":
        """The values raised to ``exponent`` (a number or an expression)."""
        return self._call("power_checked", exponent)

    # namespaces
    @property
    def str(self) -> "_StringNamespace":
        """String functions: ``col("s").str.upper()``..."""
        return _StringNamespace(self)

    @property
    def dt(self) -> "_DatetimeNamespace":
        """Date and time functions: ``col("t").dt.year()``..."""
        return _DatetimeNamespace(self)

    @property
    def list(self) -> "_ListNamespace":
        """List functions: ``col("l").list.len()``..."""
        return _ListNamespace(self)

    @property
    def struct(self) -> "_StructNamespace":
        """Struct functions: ``col("s").struct.field("a")``."""
        return _StructNamespace(self)


def _values(values, what: str) -> "LiteralExpr":
    if isinstance(values, LiteralExpr):
        values = values.value
    if isinstance(values, Expr) or isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what}: values must be a list of literals, got {values!r}")
    return LiteralExpr(list(values))


@dataclass(frozen=True, eq=False, repr=False)
class ColumnExpr(Expr):
    """The values of column ``name``."""

    _name: str

    @property
    def name(self) -> str:
        return self._name

    def _key(self):
        return (self._name,)

    def to_pyarrow(self) -> pc.Expression:
        return pc.field(self._name)


@dataclass(frozen=True, eq=False, repr=False)
class LiteralExpr(Expr):
    """A constant, the same for every row."""

    value: Any

    def _key(self):
        return (type(self.value), self.value if not isinstance(self.value, list) else tuple(self.value))

    def to_pyarrow(self) -> pc.Expression:
        if isinstance(self.value, pa.Scalar):
            return pc.scalar(self.value)
        return pc.scalar(pa.scalar(self.value))


@dataclass(frozen=True, eq=False, repr=False)
class BinaryExpr(Expr):
    """``left op right``."""

    op: Operation
    left: Expr
    right: Expr

    def structurally_equals(self, other) -> bool:
        return (isinstance(other, BinaryExpr) and self.op is other.op
                and self.left.structurally_equals(other.left) and self.right.structurally_equals(other.right))

    def to_pyarrow(self) -> pc.Expression:
        left = self.left.to_pyarrow()
        if self.op in (Operation.IN, Operation.NOT_IN):
            found = left.isin(pa.array(self.right.value))
            return found if self.op is Operation.IN else ~found
        return _BINARY[self.op](left, self.right.to_pyarrow())


@dataclass(frozen=True, eq=False, repr=False)
class UnaryExpr(Expr):
    """``op operand`` (not, is_null, is_not_null)."""

    op: Operation
    operand: Expr

    def structurally_equals(self, other) -> bool:
        return isinstance(other, UnaryExpr) and self.op is other.op and self.operand.structurally_equals(other.operand)

    def to_pyarrow(self) -> pc.Expression:
        return _UNARY[self.op](self.operand.to_pyarrow())


@dataclass(frozen=True, eq=False, repr=False)
class AliasExpr(Expr):
    """``expr`` named ``name``."""

    expr: Expr
    _name: str

    @property
    def name(self) -> str:
        return self._name

    def structurally_equals(self, other) -> bool:
        return isinstance(other, AliasExpr) and self._name == other._name and self.expr.structurally_equals(other.expr)

    def to_pyarrow(self) -> pc.Expression:
        return self.expr.to_pyarrow()


@dataclass(frozen=True, eq=False, repr=False)
class FunctionExpr(Expr):
    """An Arrow compute function (``function``) applied to ``args`` with ``options``."""

    function: str
    args: Tuple[Expr, ...]
    options: Any = field(default=None)

    def structurally_equals(self, other) -> bool:
        return (isinstance(other, FunctionExpr) and self.function == other.function
                and len(self.args) == len(other.args)
                and all(a.structurally_equals(b) for a, b in zip(self.args, other.args))
                and self.options == other.options)

    def to_pyarrow(self) -> pc.Expression:
        return pc.Expression._call(self.function, [a.to_pyarrow() for a in self.args], self.options)


@dataclass(frozen=True, eq=False, repr=False)
class StarExpr(Expr):
    """Every column of the input (for projections)."""

    def to_pyarrow(self) -> pc.Expression:
        raise TypeError("star() stands for every column; it has no single value")

    def __repr__(self) -> str:
        return "StarExpr()"


@dataclass
class _StringNamespace:
    """String functions of an expression (Arrow's utf8 kernels)."""

    _expr: Expr

    def _call(self, function, options=None, *args):
        return FunctionExpr(function, (self._expr,) + tuple(_as_expr(a) for a in args), options)

    def len(self): return self._call("utf8_length")  # noqa: E704
    def byte_len(self): return self._call("binary_length")  # noqa: E704
    def upper(self): return self._call("utf8_upper")  # noqa: E704
    def lower(self): return self._call("utf8_lower")  # noqa: E704
    def capitalize(self): return self._call("utf8_capitalize")  # noqa: E704
    def title(self): return self._call("utf8_title")  # noqa: E704
    def swapcase(self): return self._call("utf8_swapcase")  # noqa: E704
    def reverse(self): return self._call("utf8_reverse")  # noqa: E704
    def is_alpha(self): return self._call("utf8_is_alpha")  # noqa: E704
    def is_alnum(self): return self._call("utf8_is_alnum")  # noqa: E704
    def is_digit(self): return self._call("utf8_is_digit")  # noqa: E704
    def is_decimal(self): return self._call("utf8_is_decimal")  # noqa: E704
    def is_numeric(self): return self._call("utf8_is_numeric")  # noqa: E704
    def is_space(self): return self._call("utf8_is_space")  # noqa: E704
    def is_lower(self): return self._call("utf8_is_lower")  # noqa: E704
    def is_upper(self): return self._call("utf8_is_upper")  # noqa: E704
    def is_title(self): return self._call("utf8_is_title")  # noqa: E704
    def is_ascii(self): return self._call("string_is_ascii")  # noqa: E704

    def _trim(self, kind: str, characters: Optional[str]):
        if characters is None:
            return self._call(f"utf8_{kind}_whitespace")
        return self._call(f"utf8_{kind}", pc.TrimOptions(characters))

    def strip(self, characters: Optional[str] = None):
        """Without leading and trailing whitespace (or ``characters``)."""
        return self._trim("trim", characters)

    def lstrip(self, characters: Optional[str] = None):
        return self._trim("ltrim", characters)

    def rstrip(self, characters: Optional[str] = None):
        return self._trim("rtrim", characters)

    def starts_with(self, pattern: str, ignore_case: bool = False):
        return self._call("starts_with", pc.MatchSubstringOptions(pattern, ignore_case=ignore_case))

    def ends_with(self, pattern: str, ignore_case: bool = False):
        return self._call("ends_with", pc.MatchSubstringOptions(pattern, ignore_case=ignore_case))

    def contains(self, pattern: str, ignore_case: bool = False):
        """True where the string contains ``pattern`` (a plain substring)."""
        return self._call("match_substring", pc.MatchSubstringOptions(pattern, ignore_case=ignore_case))

    def match(self, pattern: str, ignore_case: bool = False):
        """True where the string matches SQL LIKE ``pattern`` (``%``, ``_``)."""
        return self._call("match_like", pc.MatchSubstringOptions(pattern, ignore_case=ignore_case))

    def match_regex(self, pattern: str, ignore_case: bool = False):
        """True where the regular expression ``pattern`` matches somewhere in the string."""
        return self._call("match_substring_regex", pc.MatchSubstringOptions(pattern, ignore_case=ignore_case))

    def find(self, pattern: str):
        """The index of the first ``pattern`` (-1 if absent)."""
        return self._call("find_substring", pc.MatchSubstringOptions(pattern))

    def count(self, pattern: str):
        """The occurrences of ``pattern``."""
        return self._call("count_substring", pc.MatchSubstringOptions(pattern))

    def replace(self, pattern: str, replacement: str, max_replacements: Optional[int] = None):
        return self._call("replace_substring",
                          pc.ReplaceSubstringOptions(pattern, replacement, max_replacements=max_replacements))

    def replace_regex(self, pattern: str, replacement: str, max_replacements: Optional[int] = None):
        return self._call("replace_substring_regex",
                          pc.ReplaceSubstringOptions(pattern, replacement, max_replacements=max_replacements))

    def slice(self, start: int, stop: Optional[int] = None, step: int = 1):
        """Characters ``[start:stop:step]``, as Python slices them."""
        return self._call("utf8_slice_codeunits", pc.SliceOptions(start, stop, step))

    def pad(self, width: int, fillchar: str = " ", side: str = "right"):
        """Padded with ``fillchar`` to ``width`` characters on ``side`` ("left", "right", "both")."""
        kinds = {"left": "utf8_lpad", "right": "utf8_rpad", "both": "utf8_center"}
        if side not in kinds:
            raise ValueError(f"pad: side must be 'left', 'right' or 'both', got {side!r}")
        return self._call(kinds[side], pc.PadOptions(width, fillchar))

    def lpad(self, width: int, fillchar: str = " "):
        return self.pad(width, fillchar, "left")

    def rpad(self, width: int, fillchar: str = " "):
        return self.pad(width, fillchar, "right")

    def center(self, width: int, fillchar: str = " "):
        return self.pad(width, fillchar, "both")

    def split(self, pattern: str, max_splits: Optional[int] = None):
        """A list of the parts between ``pattern``."""
        return self._call("split_pattern", pc.SplitPatternOptions(pattern, max_splits=max_splits))

    def split_regex(self, pattern: str, max_splits: Optional[int] = None):
        """A list of the parts between matches of the regular expression ``pattern``."""
        return self._call("split_pattern_regex", pc.SplitPatternOptions(pattern, max_splits=max_splits))

    def split_whitespace(self, max_splits: Optional[int] = None):
        """A list of the parts between runs of whitespace."""
        return self._call("utf8_split_whitespace", pc.SplitOptions(max_splits=max_splits))

    def replace_slice(self, start: int, stop: int, replacement: str):
        """Characters ``[start:stop]`` replaced by ``replacement``."""
        return self._call("utf8_replace_slice", pc.ReplaceSliceOptions(start, stop, replacement))

    def extract(self, pattern: str):
        """A struct of the regular expression's named groups (``(?P<name>...)``)."""
        return self._call("extract_regex", pc.ExtractRegexOptions(pattern))

    def repeat(self, n: int):
        return self._call("binary_repeat", None, n)


@dataclass
class _DatetimeNamespace:
    """Date and time functions of an expression (Arrow's temporal kernels)."""

    _expr: Expr

    def _call(self, function, options=None):
        return FunctionExpr(function, (self._expr,), options)

    def year(self): return self._call("year")  # noqa: E704
    def quarter(self): return self._call("quarter")  # noqa: E704
    def month(self): return self._call("month")  # noqa: E704
    def day(self): return self._call("day")  # noqa: E704
    def day_of_week(self): return self._call("day_of_week")  # noqa: E704
    def day_of_year(self): return self._call("day_of_year")  # noqa: E704
    def hour(self): return self._call("hour")  # noqa: E704
    def minute(self): return self._call("minute")  # noqa: E704
    def second(self): return self._call("second")  # noqa: E704
    def millisecond(self): return self._call("millisecond")  # noqa: E704
    def microsecond(self): return self._call("microsecond")  # noqa: E704
    def nanosecond(self): return self._call("nanosecond")  # noqa: E704

    def strftime(self, fmt: str):
        """Formatted as text with ``fmt`` (C strftime codes)."""
        return self._call("strftime", pc.StrftimeOptions(fmt))

    def ceil(self, unit: str):
        return self._call("ceil_temporal", pc.RoundTemporalOptions(1, unit))

    def floor(self, unit: str):
        return self._call("floor_temporal", pc.RoundTemporalOptions(1, unit))

    def round(self, unit: str):
        return self._call("round_temporal", pc.RoundTemporalOptions(1, unit))


@dataclass
class _ListNamespace:
    """List functions of an expression."""

    _expr: Expr

    def len(self):
        return FunctionExpr("list_value_length", (self._expr,))

    def get(self, index: int):
        """The element at ``index`` of each list."""
        return FunctionExpr("list_element", (self._expr, LiteralExpr(index)))

    def slice(self, start: int, stop: Optional[int] = None, step: int = 1):
        return FunctionExpr("list_slice", (self._expr,), pc.ListSliceOptions(start, stop, step))

    def flatten(self):
        return FunctionExpr("list_flatten", (self._expr,))


@dataclass
class _StructNamespace:
    """Struct functions of an expression."""

    _expr: Expr

    def field(self, name: str):
        """The struct's field ``name``."""
        return FunctionExpr("struct_field", (self._expr,), pc.StructFieldOptions([name]))

    def __getitem__(self, name: str):
        return self.field(name)


@public
def col(name: str) -> ColumnExpr:
    """The values of column ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"col: name must be a column name (a string), got {name!r}")
    return ColumnExpr(name)


@public
def lit(value: Any) -> LiteralExpr:
    """The constant ``value`` (a number, string, bool, date, None...) for every row."""
    try:
        pa.scalar(value) if not isinstance(value, pa.Scalar) else value
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        raise TypeError(f"lit: {value!r} of type {type(value).__name__} has no Arrow scalar type") from None
    return LiteralExpr(value)


@public
def star() -> StarExpr:
    """Every column of the input (for projections)."""
    return StarExpr()


def _python_per_batch(name: str):
    def unsupported(*args, **kwargs):
        raise NotImplementedError(
            f"millstream.expressions.{name} runs Python for every batch, which native expressions "
            "do not; use map_batches (or add_column) for that step")
    unsupported.__name__ = name
    unsupported.__doc__ = f"Not implemented: {name} runs Python per batch; use map_batches."
    return unsupported


udf = _python_per_batch("udf")
pyarrow_udf = _python_per_batch("pyarrow_udf")
download = _python_per_batch("download")
monotonically_increasing_id = _python_per_batch("monotonically_increasing_id")


def to_pyarrow(expr: Any) -> pc.Expression:
    """``expr`` (an Expr or a pyarrow Expression) as a pyarrow Expression."""
    if isinstance(expr, Expr):
        return expr.to_pyarrow()
    return expr

