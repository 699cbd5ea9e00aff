import pytest
import torch

from normlab.train.parallel import ProcessContext, prepare_model, wrap_ddp


def test_single_process_defaults():
    ctx = ProcessContext.detect()
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    x = torch.arange(6)
    assert ctx.shard(x) is x and ctx.per_process(64) == 64
    model = torch.nn.Linear(2, 2)
    assert prepare_model(model, ctx, sync_bn=True) is model
    assert wrap_ddp(model, ctx, torch.device("cpu")) is model


def test_shards_partition_the_global_batch():
    x = torch.arange(12)
    parts = [ProcessContext(rank, 3).shard(x) for rank in range(3)]
    assert torch.equal(torch.cat(parts), x)
    assert ProcessContext(1, 3).per_process(12) == 4
    with pytest.raises(ValueError, match="batch_size=10 is the global batch.*divisible by the 3"):
        ProcessContext(0, 3).per_process(10)


def test_an_uneven_global_batch_is_refused_not_cut():
    # the 10th sample used to be dropped silently (10 // 3 = 3 per process)
    with pytest.raises(ValueError, match="batch_size=10 is the global batch.*divisible by the 3"):
        ProcessContext(2, 3).shard(torch.arange(10))
    assert ProcessContext(0, 1).any_process(True, torch.device("cpu"))
    assert not ProcessContext(0, 1).any_process(False, torch.device("cpu"))
