import pytest
import torch

from normlab.data import BatchLoader, load_dataset


def _ids(n: int, classes: int = 10):
    """x carries each sample's id (so batches can be traced back), y = id % classes."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1)
    return x, torch.arange(n) % classes


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _flat_ids(batches):
    return torch.cat([x.view(-1) for x, _ in batches]).long()


@pytest.mark.parametrize(
    "n, batch, drop_last, expected_len",
    [
        (100, 32, True, 3),
        (100, 32, False, 4),
        (96, 32, True, 3),
        (96, 32, False, 3),
        (5, 8, False, 1),
    ],
)
def test_every_sample_once_per_epoch(n, batch, drop_last, expected_len):
    x, y = _ids(n)
    loader = BatchLoader(x, y, batch, drop_last=drop_last, seed=1)
    assert len(loader) == expected_len
    for _ in range(3):
        batches = _epoch(loader)
        assert len(batches) == expected_len
        ids = _flat_ids(batches)
        assert len(ids) == len(set(ids.tolist()))  # never twice
        assert len(ids) == (n // batch * batch if drop_last else n)
        for xb, yb in batches:  # labels stay aligned with their samples
            assert torch.equal(yb, xb.view(-1).long() % 10)
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64


def test_order_is_reproducible_and_changes_per_epoch():
    x, y = _ids(64)
    a, b = BatchLoader(x, y, 16, seed=5), BatchLoader(x, y, 16, seed=5)
    other = BatchLoader(x, y, 16, seed=6)
    a1, a2 = _flat_ids(_epoch(a)), _flat_ids(_epoch(a))
    assert torch.equal(a1, _flat_ids(_epoch(b))) and torch.equal(a2, _flat_ids(_epoch(b)))
    assert not torch.equal(a1, a2)  # the generator advances per epoch without set_epoch
    assert not torch.equal(a1, _flat_ids(_epoch(other)))
    assert sorted(a1.tolist()) == list(range(64))


def test_no_shuffle_keeps_data_order():
    x, y = _ids(10)
    loader = BatchLoader(x, y, 4, shuffle=False, drop_last=False)
    assert [b[0].view(-1).long().tolist() for b in _epoch(loader)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_normalization_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 4, 4), generator=gen, dtype=torch.uint8)
    y = torch.zeros(20, dtype=torch.long)
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.25])
    loader = BatchLoader(x, y, 20, shuffle=False, mean=mean, std=std)
    xb, _ = next(iter(loader))
    reference = (x.double() / 255 - mean.double().view(1, 3, 1, 1)) / std.double().view(1, 3, 1, 1)
    torch.testing.assert_close(xb.double(), reference, rtol=1e-5, atol=1e-5)
    # float data is not rescaled, only normalized; the stored data stays uint8
    assert loader._x.dtype == torch.uint8
    xf = torch.randn(8, 2, 5, dtype=torch.float64)
    xb, _ = next(iter(BatchLoader(xf, y[:8], 8, shuffle=False, mean=[1.0, -1.0], std=[2.0, 4.0])))
    torch.testing.assert_close(
        xb.double(),
        (xf - torch.tensor([1.0, -1.0]).view(1, 2, 1)) / torch.tensor([2.0, 4.0]).view(1, 2, 1),
        rtol=1e-6,
        atol=1e-6,
    )


def test_dataset_statistics_normalize_to_zero_mean_unit_std():
    ds = load_dataset("synthetic", shape=(3, 8, 8), train_size=256, test_size=8, uint8=True)
    loader = BatchLoader(ds.train_x, ds.train_y, 256, mean=ds.mean, std=ds.std)
    xb, _ = next(iter(loader))
    torch.testing.assert_close(xb.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(xb.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("batching", ["random", "class_grouped"])
@pytest.mark.parametrize("stop_after", [0, 3, 7, 8, 13])
def test_resume_gives_the_identical_batch_sequence(batching, stop_after):
    x, y = _ids(70, classes=5)
    kw = dict(seed=11, batching=batching, classes_per_batch=2)
    full = BatchLoader(x, y, 8, **kw)
    assert len(full) == (8 if batching == "random" else 7)  # grouped: 5 classes x 3 chunks of 4 -> 7 pairs
    reference = [b for _ in range(3) for b in _epoch(full)]  # 3 epochs uninterrupted

    first = BatchLoader(x, y, 8, **kw)
    taken, it = [], iter(first)
    while len(taken) < stop_after:  # consume stop_after batches, crossing epochs as needed
        try:
            taken.append(next(it))
        except StopIteration:
            it = iter(first)
    state = first.state_dict()
    resumed = BatchLoader(x, y, 8, **kw)
    resumed.load_state_dict(state)
    rest = []
    while len(taken) + len(rest) < len(reference):
        rest += _epoch(resumed)
    for (xa, ya), (xb, yb) in zip(taken + rest, reference, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_state_after_last_batch_points_at_next_epoch():
    x, y = _ids(16)
    loader = BatchLoader(x, y, 8)
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
    assert loader.epoch == 1


def test_load_state_dict_checks_settings():
    x, y = _ids(32)
    state = BatchLoader(x, y, 8, seed=1).state_dict()
    with pytest.raises(ValueError, match=r"seed: saved 1, now 2.*build the loader with the saved"):
        BatchLoader(x, y, 8, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"batch_size: saved 8, now 4"):
        BatchLoader(x, y, 4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"expected epoch >= 0 and 0 <= batch < 4"):
        BatchLoader(x, y, 8, seed=1).load_state_dict({**state, "batch": 4})


def test_load_state_dict_checks_crop_padding():
    # A resumed loader with another padding used to continue silently with another augmentation.
    x = torch.zeros(32, 1, 8, 8, dtype=torch.uint8)
    y = torch.arange(32) % 4
    state = BatchLoader(x, y, 8, augment=True, crop_padding=2).state_dict()
    assert state["crop_padding"] == 2
    with pytest.raises(ValueError, match=r"crop_padding: saved 2, now 4.*build the loader"):
        BatchLoader(x, y, 8, augment=True).load_state_dict(state)
    BatchLoader(x, y, 8, augment=True, crop_padding=2).load_state_dict(state)
    # A state saved before crop_padding was recorded implies the default padding of 4.
    old = {k: v for k, v in BatchLoader(x, y, 8, augment=True).state_dict().items() if k != "crop_padding"}
    BatchLoader(x, y, 8, augment=True).load_state_dict(old)
    with pytest.raises(ValueError, match=r"crop_padding: saved 4, now 2"):
        BatchLoader(x, y, 8, augment=True, crop_padding=2).load_state_dict(old)


def test_class_grouped_batches_follow_ioffe_fig3():
    # Uneven classes: 10 classes with 40..130 examples; batch 64 = 4 classes x 16 examples.
    labels = torch.cat([torch.full((40 + 10 * c,), c) for c in range(10)])
    x = torch.arange(len(labels), dtype=torch.float32).view(-1, 1)
    loader = BatchLoader(x, labels, 64, batching="class_grouped", classes_per_batch=4, seed=2)
    seen_class_sets = set()
    for _ in range(2):
        batches = _epoch(loader)
        assert len(batches) == len(loader) > 0
        ids = _flat_ids(batches)
        assert len(ids) == len(set(ids.tolist()))  # each sample at most once per epoch
        for xb, yb in batches:
            assert torch.equal(yb, labels[xb.view(-1).long()])  # aligned
            counts = torch.bincount(yb, minlength=10)
            assert sorted(counts[counts > 0].tolist()) == [16, 16, 16, 16]
            seen_class_sets.add(tuple(torch.nonzero(counts).view(-1).tolist()))
            # classes are interleaved inside a batch (ghost batches see several classes)
            assert len(set(yb[:16].tolist())) > 1
    assert len(seen_class_sets) > 3
    # the count is the most groups the per-class chunks allow: (2+3+...+8) chunks of 16
    chunks = [(40 + 10 * c) // 16 for c in range(10)]
    assert len(loader) == sum(chunks) // 4


def test_class_grouped_argument_errors():
    x, y = _ids(64, classes=3)
    with pytest.raises(ValueError, match="batch_size divisible by classes_per_batch, got 10 and 4"):
        BatchLoader(x, y, 10, batching="class_grouped")
    with pytest.raises(ValueError, match="classes_per_batch=4 but the labels have only 3 classes"):
        BatchLoader(x, y, 8, batching="class_grouped")
    with pytest.raises(ValueError, match="needs drop_last=True"):
        BatchLoader(x, y, 6, batching="class_grouped", classes_per_batch=3, drop_last=False)
    with pytest.raises(ValueError, match="class labels >= 0, got -1"):
        BatchLoader(x, y - 1, 8, batching="class_grouped", classes_per_batch=2)
    with pytest.raises(ValueError, match="batching must be 'random' or 'class_grouped'"):
        BatchLoader(x, y, 8, batching="grouped")


def test_augmentation_keeps_shapes_and_label_alignment():
    # Each image is a constant equal to 10 * label + 5; zero padding may enter at the border.
    labels = torch.arange(40) % 10
    x = (10 * labels + 5).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    loader = BatchLoader(x, labels, 16, augment=True, crop_padding=2, seed=0)
    changed = False
    for xb, yb in _epoch(loader) + _epoch(loader):
        assert xb.shape == (16, 3, 8, 8) and xb.dtype == torch.float32
        for image, label in zip(xb, yb):
            values = set((image * 255).round().long().unique().tolist())
            assert values <= {0, 10 * int(label) + 5}
            assert 10 * int(label) + 5 in values  # at most 2 of 8 rows/cols are padding
            changed |= 0 in values
        # the centre survives any crop offset within the padding
        centre = (xb[:, :, 2:6, 2:6] * 255).round().long()
        assert torch.equal(centre, (10 * yb + 5).view(-1, 1, 1, 1).expand_as(centre))
    assert changed  # some crops actually moved


@pytest.mark.parametrize("augment", [False, True])
def test_index_batches_and_make_batch_give_the_iterated_batches(augment):
    # the CUDA-graphed step makes its batch from (indices, crop/flip parameters) itself
    x = torch.randint(0, 256, (70, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(70) % 7
    stats = dict(mean=torch.tensor([0.1, 0.2, 0.3]), std=torch.tensor([0.5, 0.6, 0.7]))
    iterated = BatchLoader(x, y, 16, augment=augment, seed=3, **stats)
    planned = BatchLoader(x, y, 16, augment=augment, seed=3, **stats)
    for _ in range(2):
        expected = _epoch(iterated)
        parts = [(idx.clone(), None if p is None else p.clone()) for idx, p in planned.index_batches()]
        assert len(parts) == len(expected) == 4 and planned.state_dict() == iterated.state_dict()
        for (idx, params), (xb, yb) in zip(parts, expected):
            assert idx.shape == (16,) and idx.dtype == torch.int64
            assert (params is None) == (not augment) and (params is None or params.shape == (16, 3))
            made_x, made_y = planned.make_batch(idx, params)
            assert torch.equal(made_x, xb) and torch.equal(made_y, yb)


def test_augmentation_is_reproducible_and_flips():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 6, 6), generator=gen, dtype=torch.uint8)
    y = torch.zeros(32, dtype=torch.long)
    a = _epoch(BatchLoader(x, y, 32, shuffle=False, augment=True, crop_padding=0, seed=4))
    b = _epoch(BatchLoader(x, y, 32, shuffle=False, augment=True, crop_padding=0, seed=4))
    assert torch.equal(a[0][0], b[0][0])
    pixels = (a[0][0] * 255).round().to(torch.uint8)  # back to the stored bytes
    flipped = (pixels == x.flip(-1)).flatten(1).all(1)
    same = (pixels == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 0 < int(flipped.sum()) < 32


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x, y: BatchLoader(x.numpy(), y, 4), "must be torch tensors"),
        (lambda x, y: BatchLoader(x, y[:-1], 4), r"same N, got x \(10, 1\) and y \(9,\)"),
        (lambda x, y: BatchLoader(x, y, 0), "batch_size must be a positive integer"),
        (lambda x, y: BatchLoader(x, y, 11), "no batches: 10 samples with batch_size 11"),
        (
            lambda x, y: BatchLoader(x[:0], y[:0], 4, drop_last=False),
            "no batches: 0 samples with batch_size 4 and drop_last=False",
        ),
        # float labels used to be truncated to int64 without a word (0.7 -> class 0)
        (lambda x, y: BatchLoader(x, y + 0.7, 4), "y must hold integer class labels, got torch.float32"),
        (lambda x, y: BatchLoader(x, y, 4, augment=True), r"augment=True needs image data"),
        (lambda x, y: BatchLoader(x, y, 4, mean=[0.0]), "give both mean and std"),
        (lambda x, y: BatchLoader(x, y, 4, mean=[0.0, 1.0], std=[1.0, 1.0]), r"one value per channel \(1\)"),
        (lambda x, y: BatchLoader(x, y, 4, mean=[0.0], std=[0.0]), "std must be > 0"),
        (lambda x, y: BatchLoader(x.long(), y, 4), "uint8 .* or floating point"),
        (lambda x, y: BatchLoader(x, y, 4, device="gpu0"), "device: expected cpu, cuda, cuda:N or auto, got 'gpu0'"),
    ],
)
def test_bad_arguments_get_one_clear_message(make, message):
    x, y = _ids(10)
    with pytest.raises((ValueError, TypeError), match=message):
        make(x, y)


def test_auto_device_resolves():
    x, y = _ids(8)
    loader = BatchLoader(x, y, 4, device="auto")
    assert loader.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches_without_host_sync_per_step():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 8, 8), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (256,), generator=gen)
    kw = dict(seed=3, augment=True, mean=[0.5] * 3, std=[0.25] * 3)
    cpu = _epoch(BatchLoader(x, y, 32, **kw))
    loader = BatchLoader(x, y, 32, device="cuda", **kw)
    it = iter(loader)
    first = next(it)  # the epoch plan is copied to the device here, once
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = [next(it) for _ in range(len(loader) - 1)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for (xa, ya), (xb, yb) in zip(cpu, [first] + rest, strict=True):
        assert xb.device.type == "cuda" and torch.equal(ya, yb.cpu())
        torch.testing.assert_close(xa, xb.cpu())
