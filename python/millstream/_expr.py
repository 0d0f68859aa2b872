"""Predicate expressions: a string such as ``"qty > 10 and cat == 'a'"`` or a
``pyarrow.compute.Expression``, turned into the engine's serialized form."""

from __future__ import annotations

import ast
import operator

import pyarrow as pa
import pyarrow.compute as pc

_COMPARE = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_ARITH = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    # Python's `/` is true division (Arrow's divide truncates integers): 3 / 2 is 1.5.
    ast.Div: lambda a, b: operator.truediv(a.cast(pa.float64()), b),
}


# Predicates Ray's expression parser knows by name: is_null(x), is_valid(x) / is_not_null(x),
# is_nan(x), is_in(x, [values]).
_FUNCTIONS = {"is_null": 1, "is_valid": 1, "is_not_null": 1, "is_nan": 1, "is_in": 2}


def _call(node: ast.Call, text: str) -> pc.Expression:
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    if name not in _FUNCTIONS or node.keywords:
        raise ValueError(f"filter expression {text!r}: unsupported function {name}(); the functions are "
                         + ", ".join(f"{f}()" for f in _FUNCTIONS))
    if len(node.args) != _FUNCTIONS[name]:
        raise ValueError(f"filter expression {text!r}: {name}() takes {_FUNCTIONS[name]} argument(s), "
                         f"got {len(node.args)}")
    operand = _convert(node.args[0], text)
    if name == "is_null":
        return operand.is_null()
    if name in ("is_valid", "is_not_null"):
        return operand.is_valid()
    if name == "is_nan":
        return pc.is_nan(operand)
    values = node.args[1]
    if not isinstance(values, (ast.List, ast.Tuple, ast.Set)):
        raise ValueError(f"filter expression {text!r}: is_in() needs a literal list")
    return operand.isin(pa.array([ast.literal_eval(e) for e in values.elts]))


def _dotted_name(node: ast.AST):
    """``a.b.c`` as the column name "a.b.c"; None when the node is not names and dots."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _convert(node: ast.AST, text: str) -> pc.Expression:
    if isinstance(node, ast.Expression):
        return _convert(node.body, text)
    if isinstance(node, ast.BoolOp):
        parts = [_convert(v, text) for v in node.values]
        out = parts[0]
        for part in parts[1:]:
            out = (out & part) if isinstance(node.op, ast.And) else (out | part)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_convert(node.operand, text)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return pc.scalar(0) - _convert(node.operand, text)
    if isinstance(node, ast.Compare):
        out = None
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                    raise ValueError(f"filter expression {text!r}: 'in' needs a literal list")
                values = pa.array([ast.literal_eval(e) for e in right.elts])
                part = _convert(left, text).isin(values)
                if isinstance(op, ast.NotIn):
                    part = ~part
            elif type(op) in _COMPARE:
                part = _COMPARE[type(op)](_convert(left, text), _convert(right, text))
            elif isinstance(op, (ast.Is, ast.IsNot)) and isinstance(right, ast.Constant) and right.value is None:
                part = _convert(left, text).is_null()
                if isinstance(op, ast.IsNot):
                    part = ~part
            else:
                raise ValueError(f"filter expression {text!r}: unsupported operator {type(op).__name__}")
            out = part if out is None else (out & part)
            left = right
        return out
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_convert(node.left, text), _convert(node.right, text))
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return pc.scalar({"True": True, "False": False, "None": None}[node.id])
        return pc.field(node.id)
    if isinstance(node, ast.Call):
        return _call(node, text)
    if isinstance(node, ast.Attribute) and _dotted_name(node):
        # `sepal.length`: a column whose name has dots, as Ray's expression parser reads it.
        return pc.field(_dotted_name(node))
    if isinstance(node, ast.Constant):
        return pc.scalar(node.value)
    raise ValueError(
        f"filter expression {text!r}: unsupported syntax {type(node).__name__}; use column names (dots allowed: a.b), "
        "literals, comparisons, arithmetic, and/or/not, 'in [...]', 'is None', is_null(x)..."
    )


_LITERAL_TYPES = {bool: "bool", int: "int64", float: "double", str: "string", bytes: "binary", type(None): "null"}


def _static_type(node: ast.AST):
    """The type of ``node`` when its syntax tells it ("bool", "int64", "double", "number"
    for arithmetic on columns...), else None (a bare column name: its type is the data's)."""
    if isinstance(node, (ast.Compare, ast.BoolOp, ast.Call)) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return "bool"
    if isinstance(node, ast.Constant):
        return _LITERAL_TYPES.get(type(node.value), type(node.value).__name__)
    if isinstance(node, ast.Name) and node.id in ("True", "False", "None"):
        return "null" if node.id == "None" else "bool"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _static_type(node.operand) or "number"
    if isinstance(node, ast.BinOp):
        sides = {_static_type(node.left), _static_type(node.right)}
        if isinstance(node.op, ast.Div) or "double" in sides:
            return "double"
        return "int64" if sides <= {"int64", "bool"} else "number"
    return None


def _check_boolean(node: ast.AST, text: str, what: str) -> None:
    kind = _static_type(node)
    if kind is not None and kind != "bool":
        raise TypeError(f"filter expression {text!r}: {what} is of type {kind}, not boolean; "
                        "compare it (e.g. 'x != 0')")


def _check_predicate(tree: ast.Expression, text: str) -> None:
    """A filter must be boolean: ``"0"``, ``"1 - 1"``, ``"x + 1"`` raise TypeError here (the
    engine checks again against the data's types, for columns and Expressions)."""
    _check_boolean(tree.body, text, "the expression")
    for node in ast.walk(tree):
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            for value in node.values:
                _check_boolean(value, text, f"the operand {ast.unparse(value)!r} of '{word}'")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            _check_boolean(node.operand, text, f"the operand {ast.unparse(node.operand)!r} of 'not'")


def to_expression(expr) -> pc.Expression:
    """A pyarrow compute Expression for a string, a ``millstream.expressions.Expr`` or a
    pyarrow Expression."""
    if isinstance(expr, pc.Expression):
        return expr
    from millstream.expressions import Expr

    if isinstance(expr, Expr):
        return expr.to_pyarrow()
    if isinstance(expr, str):
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"filter expression {expr!r} is not valid: {e.msg}") from None
        _check_predicate(tree, expr)
        return _convert(tree, expr)
    raise TypeError(f"expected a string, a millstream.expressions.Expr or a pyarrow.compute.Expression, "
                    f"got {type(expr).__name__}")


def serialize(expr: pc.Expression) -> bytes:
    """The expression in Arrow's serialized form, which the C++ engine reads back."""
    _, (buffer,) = expr.__reduce__()
    return buffer.to_pybytes()
