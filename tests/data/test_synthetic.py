import pytest
import torch

from normlab.data import load_dataset
from normlab.data.synthetic import load_synthetic


def _nearest_mean_accuracy(ds) -> float:
    # Class means estimated on train, applied to test: near 1 when classes are well apart.
    flat_train = ds.train_x.double().flatten(1)
    means = torch.stack([flat_train[ds.train_y == c].mean(0) for c in range(ds.num_classes)])
    pred = torch.cdist(ds.test_x.double().flatten(1), means).argmin(1)
    return (pred == ds.test_y).double().mean().item()


def test_shapes_dtypes_and_reproducibility():
    a = load_dataset("synthetic", shape=(3, 32, 32), train_size=64, test_size=16, num_classes=4, seed=3)
    b = load_synthetic(shape=(3, 32, 32), train_size=64, test_size=16, num_classes=4, seed=3)
    c = load_synthetic(shape=(3, 32, 32), train_size=64, test_size=16, num_classes=4, seed=4)
    assert a.input_shape == (3, 32, 32) and a.train_x.shape == (64, 3, 32, 32)
    assert a.train_x.dtype == torch.float32 and a.train_y.dtype == torch.int64
    assert int(a.train_y.max()) < 4 and a.num_classes == 4
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)


def test_difficulty_controls_separability():
    kw = dict(shape=(1, 8), num_classes=5, train_size=500, test_size=500)
    easy = _nearest_mean_accuracy(load_synthetic(difficulty=0.1, **kw))
    hard = _nearest_mean_accuracy(load_synthetic(difficulty=5.0, **kw))
    assert easy > 0.98
    assert hard < 0.6  # chance is 0.2
    assert easy > hard


def test_uint8_mode_quantizes_like_an_image():
    ds = load_synthetic(shape=(3, 4, 4), train_size=32, test_size=8, uint8=True, seed=1)
    ref = load_synthetic(shape=(3, 4, 4), train_size=32, test_size=8, seed=1)
    assert ds.train_x.dtype == torch.uint8
    expected = (128 + 32 * ref.train_x).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(ds.train_x, expected) and torch.equal(ds.train_y, ref.train_y)
    assert ds.mean.shape == (3,) and 0 < float(ds.mean[0]) < 1  # pixel/255 units


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"shape": (3, 0)}, "positive sizes"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"train_size": 0}, "train_size and test_size"),
        ({"difficulty": -1.0}, "difficulty must be >= 0"),
    ],
)
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        load_synthetic(**kw)
