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
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}


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
    if isinstance(node, ast.Constant):
        return pc.scalar(node.value)
    raise ValueError(
        f"filter expression {text!r}: unsupported syntax {type(node).__name__}; use column names, "
        "literals, comparisons, arithmetic, and/or/not, 'in [...]', 'is None'"
    )


def to_expression(expr) -> pc.Expression:
    """A pyarrow compute Expression for a string or Expression predicate."""
    if isinstance(expr, pc.Expression):
        return expr
    if isinstance(expr, str):
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"filter expression {expr!r} is not valid: {e.msg}") from None
        return _convert(tree, expr)
    raise TypeError(f"expected a string or pyarrow.compute.Expression, got {type(expr).__name__}")


def serialize(expr: pc.Expression) -> bytes:
    """The expression in Arrow's serialized form, which the C++ engine reads back."""
    _, (buffer,) = expr.__reduce__()
    return buffer.to_pybytes()
