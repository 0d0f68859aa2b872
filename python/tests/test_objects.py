"""Columns of arbitrary Python objects (kept pickled, as Ray keeps them) survive the
engine: map_batches, map, materialize, re-batching, pandas."""

from __future__ import annotations

import fractions
import importlib.util

import numpy as np
import pytest

import millstream as md


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


POINTS = [Point(i, -i) for i in range(50)]


def test_from_items_keeps_objects():
    rows = md.from_items([{"p": p, "i": i} for i, p in enumerate(POINTS)]).take_all()
    assert rows == [{"p": p, "i": i} for i, p in enumerate(POINTS)]


def test_objects_survive_map_batches_and_materialize():
    ds = md.range(50, override_num_blocks=7).map_batches(
        lambda b: {"id": b["id"], "p": np.array([Point(int(i), -int(i)) for i in b["id"]], dtype=object)})
    materialized = ds.materialize()
    assert materialized.take_all() == [{"id": i, "p": p} for i, p in enumerate(POINTS)]
    # A second step reads the objects back (numpy batches hold them in object arrays).
    xs = materialized.map_batches(lambda b: {"x": np.array([p.x for p in b["p"]])}, batch_size=8)
    assert sorted(r["x"] for r in xs.take_all()) == list(range(50))


def test_objects_through_rows_and_batches():
    ds = md.range(20).map(lambda r: {"f": fractions.Fraction(int(r["id"]), 3), "d": {1: "one"}})
    rows = ds.take_all()
    assert [r["f"] for r in rows] == [fractions.Fraction(i, 3) for i in range(20)]
    assert all(r["d"] == {1: "one"} for r in rows)
    batches = list(ds.iter_batches(batch_size=6, batch_format="numpy"))
    assert sorted(len(b["f"]) for b in batches) == [2, 6, 6, 6]
    assert batches[0]["f"].dtype == object
    frame = ds.to_pandas()
    assert list(frame["f"]) == [fractions.Fraction(i, 3) for i in range(20)]


def test_nulls_stay_none():
    rows = md.from_items([{"p": Point(1, 2)}, {"p": None}]).take_all()
    assert rows == [{"p": Point(1, 2)}, {"p": None}]


def test_fallback_can_be_turned_off():
    ctx = md.DataContext.get_current()
    ctx.enable_fallback_to_arrow_object_ext_type = False
    with pytest.raises(Exception, match="Point"):
        md.from_items([{"p": Point(1, 2)}])


def test_from_huggingface_needs_datasets():
    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed")
    with pytest.raises(ImportError, match="'datasets'"):
        md.from_huggingface(object())


def test_objects_round_trip_through_parquet(tmp_path):
    ds = md.from_items([{"f": fractions.Fraction(i, 3), "i": i} for i in range(5)])
    ds.write_parquet(tmp_path / "out")
    back = sorted(md.read_parquet(tmp_path / "out").take_all(), key=lambda r: r["i"])
    assert back == [{"f": fractions.Fraction(i, 3), "i": i} for i in range(5)]
