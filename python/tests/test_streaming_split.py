"""streaming_split: n iterators fed by one execution, consumed by threads of different
speeds; every row once (equal=False) or equal shares (equal=True), epoch after epoch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import millstream as md
from millstream import streaming_split as split_module

N = 20_000


def _consume(iterators, delays, batch_size=500):
    """Each iterator on its own thread, sleeping ``delays[i]`` after each batch; the ids
    each consumer saw."""
    seen = [[] for _ in iterators]
    errors = []

    def run(i):
        try:
            for batch in iterators[i].iter_batches(batch_size=batch_size):
                seen[i].extend(batch["id"].tolist())
                if delays[i]:
                    time.sleep(delays[i])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(iterators))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a consumer hung"
    if errors:
        raise errors[0]
    return seen


def test_every_row_exactly_once_with_consumers_of_different_speeds():
    ds = md.range(N, override_num_blocks=40)
    iterators = ds.streaming_split(2)
    seen = _consume(iterators, [0, 0.02])
    assert sorted(seen[0] + seen[1]) == list(range(N))
    # The slow consumer did not hold the fast one back: the fast one took more.
    assert len(seen[0]) > len(seen[1])


def test_slow_consumer_keeps_memory_bounded():
    ds = md.range(N, override_num_blocks=40)
    iterators = ds.streaming_split(2, equal=True)
    _consume(iterators, [0, 0.01])
    # Never more than the bound of blocks waiting for a consumer, however slow.
    assert iterators[0]._coordinator.peak_queued <= split_module.QUEUE_BLOCKS


@pytest.mark.parametrize("n,total", [(2, N), (3, N), (4, 1001), (3, 2)])
def test_equal_gives_equal_row_counts_dropping_the_remainder(n, total):
    ds = md.range(total, override_num_blocks=min(total, 17))
    seen = _consume(ds.streaming_split(n, equal=True), [0.001 * i for i in range(n)], batch_size=64)
    assert [len(s) for s in seen] == [total // n] * n
    everything = [i for s in seen for i in s]
    assert len(set(everything)) == len(everything)
    assert set(everything) <= set(range(total))


def test_each_epoch_executes_again():
    calls = []

    def count(batch):
        calls.append(len(batch["id"]))
        return batch

    ds = md.range(5000, override_num_blocks=10).map_batches(count)
    iterators = ds.streaming_split(2)
    for epoch in range(3):
        seen = _consume(iterators, [0, 0.001])
        assert sorted(seen[0] + seen[1]) == list(range(5000)), epoch
    assert sum(calls) == 3 * 5000  # one execution per epoch, each over every row


def test_one_thread_consuming_one_after_the_other():
    # equal=False: the first consumer gets what the second has no room for.
    ds = md.range(N, override_num_blocks=40)
    first, second = ds.streaming_split(2)
    a = [i for b in first.iter_batches(batch_size=None) for i in b["id"].tolist()]
    b = [i for b in second.iter_batches(batch_size=None) for i in b["id"].tolist()]
    assert sorted(a + b) == list(range(N))


def test_equal_split_consumed_one_after_the_other_in_one_thread():
    ds = md.range(1001, override_num_blocks=9)
    first, second = ds.streaming_split(2, equal=True)
    a = [i for b in first.iter_batches(batch_size=64) for i in b["id"].tolist()]
    b = [i for b in second.iter_batches(batch_size=64) for i in b["id"].tolist()]
    assert len(a) == len(b) == 500
    assert len(set(a) | set(b)) == 1000


def test_a_consumer_leaving_early_does_not_stop_the_others():
    ds = md.range(N, override_num_blocks=40)
    first, second = ds.streaming_split(2)
    got = []

    def leave():
        for _ in first.iter_batches(batch_size=100):
            break

    def stay():
        got.extend(i for b in second.iter_batches(batch_size=100) for i in b["id"].tolist())

    threads = [threading.Thread(target=leave), threading.Thread(target=stay)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(got) == len(set(got)) and len(got) > N // 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [t for t in threading.enumerate()
                                           if t.name in ("millstream-prefetch", "millstream-split")]:
        time.sleep(0.01)  # the coordinator's thread ends just after handing out the end
    assert not [t for t in threading.enumerate() if t.name in ("millstream-prefetch", "millstream-split")]


def test_error_reaches_every_consumer():
    def bad(batch):
        raise ValueError("bad block")

    iterators = md.range(100).map_batches(bad).streaming_split(2)
    with pytest.raises(ValueError, match="bad block"):
        _consume(iterators, [0, 0])


def test_split_iterators_give_tensors_and_schema():
    torch = pytest.importorskip("torch")
    ds = md.from_numpy(np.arange(600, dtype=np.float32).reshape(100, 6))
    iterators = ds.streaming_split(2, equal=True)
    assert iterators[0].schema() == ds.schema()
    out = [[], []]

    def run(i):
        out[i] = [b["data"] for b in iterators[i].iter_torch_batches(batch_size=10)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rows = torch.cat(out[0] + out[1])
    assert rows.shape == (100, 6)
    expected = torch.arange(600, dtype=torch.float32).reshape(100, 6)
    assert torch.equal(rows[rows[:, 0].argsort()], expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'n'|n must"):
        md.range(3).streaming_split(0)
    with pytest.raises(NotImplementedError, match="locality_hints"):
        md.range(3).streaming_split(2, locality_hints=["node"])
    with pytest.raises(TypeError, match="did you mean 'equal'"):
        md.range(3).streaming_split(2, equals=True)
