"""iter_torch_batches: tensors checked against numpy/torch built from the same data."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pyarrow as pa
import pytest

import millstream as md

torch = pytest.importorskip("torch")


def _collect(it):
    return [b for b in it]


def test_range_gives_int64_tensors_in_batches():
    batches = _collect(md.range(12).iter_torch_batches(batch_size=4))
    assert [list(b) for b in batches] == [["id"]] * 3
    got = torch.cat([b["id"] for b in batches]).sort().values
    assert torch.equal(got, torch.arange(12))
    assert all(b["id"].dtype == torch.int64 for b in batches)


def test_columns_keep_their_numpy_dtypes():
    rng = np.random.default_rng(0)
    cols = {"f32": rng.random(50, dtype=np.float32), "i32": rng.integers(0, 9, 50, dtype=np.int32),
            "u8": rng.integers(0, 255, 50, dtype=np.uint8), "flag": rng.random(50) > 0.5}
    ds = md.from_arrow(pa.table(cols))
    (batch,) = _collect(ds.iter_torch_batches(batch_size=None))
    for name, values in cols.items():
        assert torch.equal(batch[name], torch.from_numpy(values.copy())), name


def test_no_copy_of_arrow_buffers_and_no_warning():
    table = pa.table({"x": np.arange(1000, dtype=np.float32)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about read-only numpy arrays
        batches = _collect(md.from_arrow(table).iter_torch_batches(batch_size=100))
    address = table["x"].chunk(0).buffers()[1].address
    # Each batch views the block's buffer: the first starts where the table's data does.
    assert batches[0]["x"].data_ptr() == address
    assert torch.equal(torch.cat([b["x"] for b in batches]), torch.arange(1000, dtype=torch.float32))


def test_dtypes_one_for_all_or_per_column():
    ds = md.from_arrow(pa.table({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]}))
    (one,) = _collect(ds.iter_torch_batches(dtypes=torch.float16))
    assert one["a"].dtype == torch.float16 and one["b"].dtype == torch.float16
    (per,) = _collect(ds.iter_torch_batches(dtypes={"a": torch.float32}))
    assert per["a"].dtype == torch.float32 and per["b"].dtype == torch.float64
    assert torch.equal(per["a"], torch.tensor([1.0, 2.0, 3.0]))


def test_dtypes_with_a_collate_fn_raise():
    with pytest.raises(ValueError, match="collate_fn"):
        md.range(3).iter_torch_batches(dtypes=torch.float32, collate_fn=lambda b: b)


def test_dtypes_naming_a_missing_column_raises():
    with pytest.raises(KeyError, match="'nope'"):
        _collect(md.range(3).iter_torch_batches(dtypes={"nope": torch.float32}))


def test_fixed_shape_tensor_column_becomes_nd_tensor():
    (batch, *_) = _collect(md.range_tensor(10, shape=(2, 3)).iter_torch_batches(batch_size=4))
    assert batch["data"].shape == (4, 2, 3)
    ids = batch["data"][:, 0, 0]
    expected = torch.from_numpy(np.broadcast_to(ids.numpy().reshape(4, 1, 1), (4, 2, 3)).copy())
    assert torch.equal(batch["data"], expected)


def test_tensor_column_from_numpy_rows():
    arrays = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    (batch,) = _collect(md.from_numpy(arrays).iter_torch_batches(batch_size=None))
    assert torch.equal(batch["data"], torch.from_numpy(arrays))
    # Batches that are slices of a block (offsets into the tensor storage).
    sliced = _collect(md.from_numpy(arrays).iter_torch_batches(batch_size=3))
    assert [b["data"].shape[0] for b in sliced] == [3, 1]
    assert torch.equal(torch.cat([b["data"] for b in sliced]), torch.from_numpy(arrays))


def test_variable_shape_tensor_column_becomes_a_list_of_tensors():
    cells = [np.zeros((2, 2)), np.ones((3, 3))]
    ds = md.from_items([{"a": c} for c in cells])
    (batch,) = _collect(ds.iter_torch_batches(batch_size=2))
    assert isinstance(batch["a"], list)
    for got, want in zip(batch["a"], cells):
        assert torch.equal(got, torch.from_numpy(want))


def test_nulls_become_nan_as_in_numpy():
    column = pa.array([1, None, 3])
    (batch,) = _collect(md.from_arrow(pa.table({"a": column})).iter_torch_batches())
    expected = torch.from_numpy(column.to_numpy(zero_copy_only=False))
    assert torch.equal(torch.isnan(batch["a"]), torch.isnan(expected))
    assert batch["a"][0] == 1 and batch["a"][2] == 3


def test_string_column_raises_naming_it():
    ds = md.from_items([{"s": "x", "n": 1}])
    with pytest.raises(TypeError, match="'s'"):
        _collect(ds.iter_torch_batches())


def test_collate_fn_gets_numpy_batches():
    seen = []

    def collate(batch):
        seen.append({k: type(v) for k, v in batch.items()})
        return torch.stack([torch.as_tensor(np.array(v)) for v in batch.values()], dim=1)

    ds = md.from_items([{"a": i, "b": 10 * i} for i in range(6)])
    out = torch.cat(_collect(ds.iter_torch_batches(batch_size=2, collate_fn=collate)))
    assert seen and all(s == {"a": np.ndarray, "b": np.ndarray} for s in seen)
    assert sorted(out.tolist()) == [[i, 10 * i] for i in range(6)]


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sizes_and_drop_last(drop_last):
    ds = md.range(10, override_num_blocks=3)
    sizes = [len(b["id"]) for b in ds.iter_torch_batches(batch_size=4, drop_last=drop_last)]
    assert sizes == ([4, 4] if drop_last else [4, 4, 2])


def test_local_shuffle_keeps_every_row_and_follows_the_seed():
    # A materialized dataset streams its blocks in order: the same seed, the same rows.
    ds = md.from_arrow(pa.table({"id": np.arange(1000)}), override_num_blocks=10)

    def run():
        return torch.cat([b["id"] for b in ds.iter_torch_batches(
            batch_size=100, local_shuffle_buffer_size=300, local_shuffle_seed=7)]).tolist()

    first = run()
    assert sorted(first) == list(range(1000))
    assert first != sorted(first)
    assert run() == first


def test_device_cpu_and_bad_devices():
    (batch,) = _collect(md.range(3).iter_torch_batches(device="cpu"))
    assert batch["id"].device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        md.range(3).iter_torch_batches(device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            md.range(3).iter_torch_batches(device="cuda")
        with pytest.raises(ValueError, match="pin_memory"):
            md.range(3).iterator().iter_torch_batches(pin_memory=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu():
    ds = md.range_tensor(64, shape=(4,))
    cpu = torch.cat([b["data"] for b in ds.iter_torch_batches(batch_size=16)])
    gpu = [b["data"] for b in ds.iter_torch_batches(batch_size=16, device="cuda")]
    assert all(t.device.type == "cuda" for t in gpu)
    assert torch.equal(torch.cat(gpu).cpu().sort(dim=0).values, cpu.sort(dim=0).values)


def test_unknown_keyword_names_the_nearest():
    with pytest.raises(TypeError, match="did you mean 'dtypes'"):
        md.range(3).iter_torch_batches(dtype=torch.float32)


@pytest.mark.parametrize("call,package", [
    (lambda ds: ds.iter_tf_batches(), "tensorflow"),
    (lambda ds: ds.to_tf("id", "id"), "tensorflow"),
    (lambda ds: ds.iter_jax_batches(), "jax"),
])
def test_other_frameworks_name_the_missing_package(call, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(ImportError, match=f"'{package}'"):
        call(md.range(3))


def test_from_torch_map_style_and_iterable():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.tensor([i, i * i])

    rows = md.from_torch(Squares()).take_all()
    assert [r["item"].tolist() for r in rows] == [[i, i * i] for i in range(5)]

    class Pairs(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([(i, f"label{i}") for i in range(3)])

    assert [r["item"] for r in md.from_torch(Pairs()).take_all()] == [(i, f"label{i}") for i in range(3)]


def test_from_torch_refuses_other_objects():
    with pytest.raises(TypeError, match="torch.utils.data.Dataset"):
        md.from_torch([1, 2, 3])


def test_collate_classes_get_their_batch_format():
    from millstream.collate_fn import (ArrowBatchCollateFn, DefaultCollateFn, NumpyBatchCollateFn,
                                       PandasBatchCollateFn)

    class Arrow(ArrowBatchCollateFn):
        def __call__(self, batch):
            assert isinstance(batch, pa.Table)
            return torch.as_tensor(batch["a"].to_numpy() + 5)

    class Numpy(NumpyBatchCollateFn):
        def __call__(self, batch):
            assert isinstance(batch["a"], np.ndarray)
            return torch.as_tensor(batch["a"] * 2)

    class Pandas(PandasBatchCollateFn):
        def __call__(self, batch):
            import pandas as pd

            assert isinstance(batch, pd.DataFrame)
            return torch.as_tensor(batch["a"].to_numpy() - 1)

    ds = md.from_arrow(pa.table({"a": np.arange(6)}))
    for collate, expected in [(Arrow(), np.arange(6) + 5), (Numpy(), np.arange(6) * 2), (Pandas(), np.arange(6) - 1)]:
        (out,) = _collect(ds.iter_torch_batches(batch_size=None, collate_fn=collate))
        assert torch.equal(out, torch.from_numpy(expected)), type(collate).__name__
    (out,) = _collect(ds.iter_torch_batches(batch_size=None, collate_fn=DefaultCollateFn(dtypes=torch.float32)))
    assert torch.equal(out["a"], torch.arange(6, dtype=torch.float32))
