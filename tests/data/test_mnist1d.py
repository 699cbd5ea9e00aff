import random
import stat

import numpy as np
import pytest
import torch

from normlab.data import load_dataset
from normlab.data import mnist1d as m1d


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """The full default MNIST-1D, generated once per test session (a few seconds)."""
    root = tmp_path_factory.mktemp("mnist1d-root")
    return root, m1d.load_mnist1d(root)


def test_default_dataset_shape_and_stats(default_build):
    root, ds = default_build
    assert ds.name == "mnist1d" and ds.num_classes == 10 and ds.input_shape == (1, 40)
    assert ds.train_x.shape == (4000, 1, 40) and ds.test_x.shape == (1000, 1, 40)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.test_y.tolist())
    # mean/std come from the train split only
    torch.testing.assert_close(ds.mean.double(), ds.train_x.double().mean().reshape(1))
    torch.testing.assert_close(ds.std.double(), ds.train_x.double().std(unbiased=False).reshape(1))


def test_default_cache_is_reused_without_regenerating(default_build, monkeypatch):
    root, ds = default_build
    monkeypatch.setattr(m1d, "generate", lambda args: pytest.fail("cache must be reused"))
    again = load_dataset("mnist1d", root)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_default_matches_the_package_generator_byte_for_byte(default_build):
    # A second, independent run of the package generator (defaults, seed 42) gives exactly the
    # bytes we cached and the tensors we serve: the default is identical across two builds.
    from mnist1d.data import get_dataset_args, make_dataset

    root, ds = default_build
    reference = make_dataset(get_dataset_args())
    with np.load(m1d.cache_path(root, m1d.generator_args())) as npz:
        for key in ("x", "y", "x_test", "y_test"):
            assert npz[key].dtype == reference[key].dtype
            assert npz[key].tobytes() == np.ascontiguousarray(reference[key]).tobytes()
        assert str(npz["content_sha256"]) == m1d.content_sha256(reference)
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(reference["x"].astype(np.float32)))
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(reference["x_test"].astype(np.float32)))
    assert torch.equal(ds.train_y, torch.from_numpy(reference["y"]).long())
    assert torch.equal(ds.test_y, torch.from_numpy(reference["y_test"]).long())


def test_describe_data_reports_the_cache(default_build):
    from normlab.data import describe_data

    root, _ = default_build
    text = describe_data("mnist1d", root)
    assert f"[ok] {m1d.cache_path(root, m1d.generator_args())}" in text and "MiB" in text


def test_small_build_matches_the_package_generator(tmp_path):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 300
    reference = make_dataset(args)
    ds = m1d.load_mnist1d(tmp_path, num_samples=300)
    assert ds.train_x.shape == (240, 1, 40) and ds.test_x.shape == (60, 1, 40)
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(reference["x"].astype(np.float32)))
    assert torch.equal(ds.test_y, torch.from_numpy(reference["y_test"]).long())


def test_generation_leaves_global_random_state_alone(tmp_path):
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    m1d.load_mnist1d(tmp_path, num_samples=100)
    assert np.random.rand() == expected_np and random.random() == expected_py


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage"])
def test_damaged_cache_is_rebuilt_identical(tmp_path, damage):
    small = {"num_samples": 200}  # small so that the rebuild is quick
    first = m1d.load_mnist1d(tmp_path / "a", **small)
    path = m1d.cache_path(tmp_path / "a", m1d.generator_args(**small))
    original = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(original[: len(original) // 2])
    elif damage == "flip_byte":
        # Inside the stored x array (past the zip and npy headers): only the hash can notice.
        data = bytearray(original)
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="damaged MNIST-1D cache.*rebuilding"):
        rebuilt = m1d.load_mnist1d(tmp_path / "a", **small)
    assert torch.equal(rebuilt.train_x, first.train_x) and torch.equal(rebuilt.test_x, first.test_x)
    assert torch.equal(rebuilt.train_y, first.train_y) and torch.equal(rebuilt.test_y, first.test_y)
    with np.load(path) as npz:  # the rebuilt cache is intact again
        assert str(npz["content_sha256"]) == m1d.content_sha256({k: npz[k] for k in m1d._ARRAYS})


def test_cache_with_wrong_shapes_is_rebuilt(tmp_path):
    args = m1d.generator_args(num_samples=100)
    path = m1d.cache_path(tmp_path, args)
    path.parent.mkdir(parents=True)
    arrays = {
        "x": np.zeros((3, 40)),
        "y": np.zeros(3, np.int64),
        "x_test": np.zeros((1, 40)),
        "y_test": np.zeros(1, np.int64),
    }
    np.savez(path, content_sha256=np.array(m1d.content_sha256(arrays)), **arrays)
    with pytest.warns(UserWarning, match=r"x shapes \(3, 40\)/\(1, 40\), expected \(80, 40\)/\(20, 40\)"):
        ds = m1d.load_mnist1d(tmp_path, num_samples=100)
    assert ds.train_x.shape == (80, 1, 40)


def test_default_args_are_the_package_defaults():
    from mnist1d.data import get_dataset_args

    package = get_dataset_args(as_dict=True)
    package.pop("url")  # the download path, never used
    assert m1d.generator_args() == package and package["seed"] == 42


def test_unknown_generator_option_is_named():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_sample'\].*num_samples"):
        m1d.generator_args(num_sample=10)


def test_different_arguments_get_different_cache_files(tmp_path):
    a = m1d.cache_path(tmp_path, m1d.generator_args())
    b = m1d.cache_path(tmp_path, m1d.generator_args(seed=7))
    assert a != b and a.parent == b.parent == tmp_path / "mnist1d"


def test_cache_file_honours_the_umask(tmp_path, umask):
    # The cache used to be a renamed mkstemp file, mode 0o600: other users sharing the data
    # folder could not read it and rebuilt it over and over.
    m1d.load_mnist1d(tmp_path, num_samples=100)
    path = m1d.cache_path(tmp_path, m1d.generator_args(num_samples=100))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
