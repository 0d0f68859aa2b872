"""get_gpu_ids(): which GPUs an actor or task of a num_gpus map owns (set by hand here:
resource_limits.gpu stands in for the machine's devices)."""

import pytest

import millstream as md


@pytest.fixture
def gpus():
    ctx = md.DataContext.get_current()
    before = ctx.execution_options.resource_limits

    def set_gpus(n):
        ctx.execution_options.resource_limits = md.ExecutionResources(gpu=n)

    yield set_gpus
    ctx.execution_options.resource_limits = before


class Recorder:
    def __init__(self):
        self.at_init = md.get_gpu_ids()

    def __call__(self, batch):
        n = len(batch["id"])
        now = md.get_gpu_ids()
        assert now == self.at_init, "an actor keeps its GPUs"
        return {"actor": [id(self)] * n, "gpus": [",".join(map(str, now))] * n}


def _actor_gpus(ds):
    rows = ds.take_all()
    by_actor = {}
    for row in rows:
        by_actor.setdefault(row["actor"], set()).add(row["gpus"])
    assert all(len(v) == 1 for v in by_actor.values())
    return sorted(v.pop() for v in by_actor.values())


def test_each_actor_owns_its_own_gpu(gpus):
    gpus(2)
    ds = md.range(2000, override_num_blocks=20).map_batches(Recorder, concurrency=2, num_gpus=1,
                                                            batch_size=50)
    assert _actor_gpus(ds) == ["0", "1"]


def test_an_actor_with_two_gpus_gets_both(gpus):
    gpus(2)
    ds = md.range(200, override_num_blocks=4).map_batches(Recorder, concurrency=1, num_gpus=2)
    assert _actor_gpus(ds) == ["0,1"]


def test_fractional_gpus_share_a_device(gpus):
    gpus(1)
    ds = md.range(2000, override_num_blocks=20).map_batches(Recorder, concurrency=2, num_gpus=0.5,
                                                            batch_size=50)
    assert _actor_gpus(ds) in (["0", "0"], ["0"])


def test_task_pool_tasks_get_a_gpu_each(gpus):
    gpus(2)

    def record(batch):
        ids = md.get_gpu_ids()
        return {"gpus": [len(ids)] * len(batch["id"]), "gpu": [ids[0]] * len(batch["id"])}

    rows = md.range(400, override_num_blocks=8).map_batches(record, num_gpus=1).take_all()
    assert len(rows) == 400
    assert {r["gpus"] for r in rows} == {1}
    assert {r["gpu"] for r in rows} <= {0, 1}


def test_no_gpus_outside_a_gpu_map(gpus):
    gpus(2)
    assert md.get_gpu_ids() == []
    rows = md.range(10).map_batches(Recorder, concurrency=1).take_all()
    assert {r["gpus"] for r in rows} == {""}
