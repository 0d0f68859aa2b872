"""iter_tf_batches, to_tf and iter_jax_batches where TensorFlow and JAX are installed (they
are not in requirements-dev.txt: these skip there; test_torch.py checks the ImportError)."""
import numpy as np
import pytest

import millstream as md


def _rows():
    # x = 0..9, y = i % 3, v = [i, i+1, i+2]: the expected values are these by hand.
    return md.from_items([{"x": float(i), "y": i % 3, "v": np.arange(3, dtype=np.float32) + i}
                          for i in range(10)])


def test_iter_tf_batches_gives_tensors_of_each_column():
    tf = pytest.importorskip("tensorflow")
    batches = list(_rows().iter_tf_batches(batch_size=4))
    assert [int(b["x"].shape[0]) for b in batches] == [4, 4, 2]
    assert all(isinstance(b["x"], tf.Tensor) for b in batches)
    assert batches[0]["x"].dtype == tf.float64 and batches[0]["v"].shape == (4, 3)
    np.testing.assert_array_equal(np.concatenate([b["x"].numpy() for b in batches]), np.arange(10.0))
    np.testing.assert_array_equal(batches[1]["v"].numpy()[0], [4, 5, 6])


def test_to_tf_pairs_features_and_labels():
    pytest.importorskip("tensorflow")
    pairs = list(_rows().to_tf("x", "y", batch_size=5))
    assert len(pairs) == 2
    np.testing.assert_array_equal(np.concatenate([f.numpy() for f, _ in pairs]), np.arange(10.0))
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in pairs]), [i % 3 for i in range(10)])


def test_iter_jax_batches_gives_jax_arrays():
    jax = pytest.importorskip("jax")
    batches = list(_rows().iter_jax_batches(batch_size=4))
    assert [int(b["x"].shape[0]) for b in batches] == [4, 4, 2]
    assert all(isinstance(b["x"], jax.Array) for b in batches)
    assert batches[0]["v"].shape == (4, 3)
    np.testing.assert_array_equal(np.concatenate([np.asarray(b["x"]) for b in batches]), np.arange(10.0))
