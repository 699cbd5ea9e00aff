import numpy as np
import pytest
import torch

from normlab.data import INPUT_NORMS, Dataset, DatasetError, channel_stats, input_stats, load_dataset


def _reference_stats(x: torch.Tensor):
    # Independent float64 reference: pixel/255 for uint8, population std over (N, spatial).
    x64 = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    dims = [0] + list(range(2, x.ndim))
    return x64.mean(dims), x64.std(dims, unbiased=False)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(50, 3, 5, 7), (40, 1, 13), (30, 4)])
def test_channel_stats_match_float64_reference(dtype, shape):
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    else:
        x = (torch.randn(shape, generator=gen) * 3 + 1).to(dtype)
    mean, std = channel_stats(x)
    ref_mean, ref_std = _reference_stats(x)
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == (shape[1],)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-6, atol=1e-7)


def test_channel_stats_accepts_numpy():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mean, _ = channel_stats(x)
    torch.testing.assert_close(mean, torch.tensor(x.mean(axis=(0, 2))))


def _dataset(**changes):
    fields = dict(
        name="t",
        train_x=torch.zeros(4, 2, 3),
        train_y=torch.zeros(4, dtype=torch.long),
        test_x=torch.zeros(2, 2, 3),
        test_y=torch.zeros(2, dtype=torch.long),
        num_classes=2,
        input_shape=(2, 3),
        mean=torch.zeros(2),
        std=torch.ones(2),
    )
    fields.update(changes)
    return Dataset(**fields)


def test_dataset_checks_its_fields_and_has_a_short_repr():
    ds = _dataset()
    assert ds.num_channels == 2
    assert repr(ds) == (
        "Dataset(name='t', train=(4, 2, 3) torch.float32, test=(2, 2, 3), num_classes=2, input_shape=(2, 3))"
    )
    with pytest.raises(ValueError, match="test_x samples have shape"):
        _dataset(test_x=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="train_y must be int64"):
        _dataset(train_y=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="one per channel"):
        _dataset(mean=torch.zeros(3))


def test_dataset_error_is_a_value_error():
    # The CLI maps ValueError to a user error (exit code 2).
    assert issubclass(DatasetError, ValueError)


def test_input_stats_are_the_train_splits_or_the_notebooks_half():
    ds = load_dataset("synthetic", shape=(3, 4, 4), train_size=20, test_size=4)
    mean, std = input_stats(ds, "half")  # transforms.Normalize((0.5,)*3, (0.5,)*3)
    assert mean.tolist() == [0.5] * 3 and std.tolist() == [0.5] * 3 and mean.dtype == torch.float32
    train_mean, train_std = input_stats(ds, "train_split")
    assert train_mean is ds.mean and train_std is ds.std
    assert INPUT_NORMS == ("train_split", "half")
    with pytest.raises(ValueError, match=r"must be one of \['train_split', 'half'\], got 'imagenet'"):
        input_stats(ds, "imagenet")
