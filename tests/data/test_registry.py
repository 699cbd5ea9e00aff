import pytest

from normlab.data import cifar, dataset_names, describe_data, idx, load_dataset, mnist1d


def test_names_default_first():
    names = dataset_names()
    assert names[0] == "mnist1d"
    assert set(names) == {"mnist1d", "cifar10", "cifar100", "mnist", "fashion_mnist", "synthetic"}


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; valid names are \['mnist1d'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown dataset"):
        describe_data("imagenet")


def test_name_is_normalized():
    ds = load_dataset(" Synthetic ", train_size=8, test_size=4)
    assert ds.name == "synthetic"
    with pytest.raises(ValueError, match="download=False"):
        load_dataset("Fashion-MNIST", download=False)  # resolves to fashion_mnist


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"dataset 'synthetic' has no option\(s\) \['size'\]; its "
        r"options are \['shape', 'num_classes'",
    ):
        load_dataset("synthetic", size=3)
    # mnist1d passes generator arguments through; the generator names the bad one
    with pytest.raises(ValueError, match=r"mnist1d: unknown option\(s\) \['bogus'\]"):
        load_dataset("mnist1d", bogus=1)


def test_describe_missing_and_present_files(tmp_path):
    text = describe_data("cifar10", tmp_path)
    assert f"data directory {tmp_path / 'cifar10'}" in text
    assert "[missing]" in text and "[ok]" not in text
    assert "put cifar-10-binary.tar.gz (SHA-256 " + cifar.CIFAR10.archive.sha256 in text

    for path in cifar.CIFAR10.paths(tmp_path / "cifar10"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    text = describe_data("cifar10", tmp_path)
    assert text.count("[ok]") == 6 and "ready: the extracted files are used" in text

    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"1")
    text = describe_data("mnist", tmp_path)
    assert f"[ok] {tmp_path / 'mnist' / 'train-images-idx3-ubyte'} (1 bytes)" in text
    assert (
        "missing: load with download=True, or put train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in text
    )
    assert idx.MNIST.mirrors[0] in text


def test_describe_mnist1d_and_synthetic_never_build(tmp_path):
    text = describe_data("mnist1d", tmp_path)
    assert "[missing]" in text and "built offline" in text
    assert not (tmp_path / "mnist1d").exists()
    assert mnist1d.cache_path(tmp_path, mnist1d.generator_args()).name in text
    assert "generated in memory" in describe_data("synthetic", tmp_path)


def test_every_name_describes(tmp_path):
    for name in dataset_names():
        assert describe_data(name, tmp_path).startswith(f"dataset {name}: data directory")
