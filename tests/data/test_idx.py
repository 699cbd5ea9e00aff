"""MNIST / Fashion-MNIST through the public API, from tiny IDX gzip files in the real format."""

import dataclasses
import gzip

import numpy as np
import pytest
import torch

from normlab.data import DatasetError, idx, load_dataset

TRAIN_N, TEST_N = 7, 3


@pytest.fixture(params=["mnist", "fashion_mnist"])
def tiny_files(request, tmp_path, monkeypatch, formats):
    """Writes the four .gz files with tiny counts and shrinks the spec's expected counts."""
    name = request.param
    attr = "MNIST" if name == "mnist" else "FASHION_MNIST"
    monkeypatch.setattr(idx, attr, dataclasses.replace(getattr(idx, attr), train_count=TRAIN_N, test_count=TEST_N))
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", TRAIN_N), ("t10k", TEST_N)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = rng.integers(0, 10, n).astype(np.uint8)
    for stem, array in arrays.items():
        formats.write_gz(tmp_path / name / f"{stem}.gz", formats.idx_bytes(array))
    return name, tmp_path, arrays


def test_idx_files_load(tiny_files):
    name, root, arrays = tiny_files
    ds = load_dataset(name, root, download=False)
    assert ds.name == name and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (TRAIN_N, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    train = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean.numpy(), [train.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std.numpy(), [train.std()], rtol=1e-6)


def test_decompressed_files_are_accepted(tiny_files, formats):
    name, root, arrays = tiny_files
    for stem, array in arrays.items():
        (root / name / f"{stem}.gz").unlink()
        (root / name / stem).write_bytes(formats.idx_bytes(array))
    ds = load_dataset(name, root, download=False)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])


def test_truncated_gzip_is_an_error_naming_the_file(tiny_files):
    name, root, _ = tiny_files
    victim = root / name / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: cannot decompress.*truncated"):
        load_dataset(name, root, download=False)


def _load_fails_after_writing(tiny_files, formats, stem, data, message):
    """Replace `stem`.gz by gzip(`data`); loading must raise `DatasetError` matching `message`."""
    name, root, _ = tiny_files
    formats.write_gz(root / name / f"{stem}.gz", data)
    with pytest.raises(DatasetError, match=message):
        load_dataset(name, root, download=False)


def test_short_data_is_an_error(tiny_files, formats):
    _, _, arrays = tiny_files
    data = formats.idx_bytes(arrays["t10k-images-idx3-ubyte"])[:-5]  # valid gzip, short content
    _load_fails_after_writing(
        tiny_files,
        formats,
        "t10k-images-idx3-ubyte",
        data,
        rf"t10k-images-idx3-ubyte\.gz: {len(data)} bytes after "
        rf"decompression, expected {len(data) + 5}",
    )


def test_huge_header_sizes_give_the_exact_expected_length(tiny_files, formats):
    # (2^32 - 1)^3 bytes: numpy's int64 product used to wrap around to a wrong expected length.
    side = 2**32 - 1
    header = bytes((0, 0, 0x08, 3)) + side.to_bytes(4, "big") * 3
    _load_fails_after_writing(
        tiny_files,
        formats,
        "train-images-idx3-ubyte",
        header + b"\0" * 8,
        rf"train-images-idx3-ubyte\.gz: 24 bytes after decompression, "
        rf"expected {16 + side**3} for dimensions",
    )


def test_wrong_magic_is_an_error(tiny_files, formats):
    _, _, arrays = tiny_files
    # labels written where images are expected: a 1-D file instead of a 3-D one
    _load_fails_after_writing(
        tiny_files,
        formats,
        "train-images-idx3-ubyte",
        formats.idx_bytes(arrays["train-labels-idx1-ubyte"]),
        r"train-images-idx3-ubyte\.gz: not an IDX file of 3-D unsigned "
        r"bytes \(magic 00000801, expected 000008",
    )


def test_wrong_counts_are_errors(tiny_files, formats):
    name, root, arrays = tiny_files
    labels = arrays["train-labels-idx1-ubyte"]
    _load_fails_after_writing(
        tiny_files,
        formats,
        "train-labels-idx1-ubyte",
        formats.idx_bytes(labels[:-1]),
        rf"train-labels-idx1-ubyte\.gz: {TRAIN_N - 1} labels, "
        rf"expected {TRAIN_N}",
    )
    formats.write_gz(root / name / "train-labels-idx1-ubyte.gz", formats.idx_bytes(labels))
    _load_fails_after_writing(
        tiny_files,
        formats,
        "t10k-images-idx3-ubyte",
        formats.idx_bytes(np.zeros((TEST_N, 28, 27), np.uint8)),
        rf"t10k-images-idx3-ubyte\.gz: images of shape \({TEST_N}, 28, "
        rf"27\), expected \({TEST_N}, 28, 28\)",
    )


def test_out_of_range_label_is_an_error(tiny_files, formats):
    _, _, arrays = tiny_files
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[1] = 12
    _load_fails_after_writing(
        tiny_files,
        formats,
        "t10k-labels-idx1-ubyte",
        formats.idx_bytes(labels),
        r"t10k-labels-idx1-ubyte\.gz: label 12 at index 1, expected 0\.\.9; "
        r"the file is corrupt\. Delete it",
    )


def test_missing_file_offline_says_where_to_put_it(tiny_files):
    name, root, _ = tiny_files
    (root / name / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DatasetError,
        match=r"t10k-labels-idx1-ubyte\.gz is missing and "
        r"download=False: put t10k-labels-idx1-ubyte\.gz \(SHA-256",
    ):
        load_dataset(name, root, download=False)


def test_download_goes_through_the_pinned_hash(tmp_path, monkeypatch, formats):
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.append((url, known_hash))
        raise ConnectionError("offline")

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    with pytest.raises(DatasetError, match="could not download train-images-idx3-ubyte.gz"):
        load_dataset("mnist", tmp_path)
    assert [c[0] for c in calls] == [m + "train-images-idx3-ubyte.gz" for m in idx.MNIST.mirrors]
    assert {c[1] for c in calls} == {"sha256:" + idx.MNIST.sha256["train-images-idx3-ubyte.gz"]}


def test_gzip_helper_writes_real_gzip(tmp_path, formats):
    # Guards the builders the tests rely on: the format really is gzip + IDX.
    path = formats.write_gz(tmp_path / "x.gz", formats.idx_bytes(np.arange(6, dtype=np.uint8).reshape(1, 2, 3)))
    raw = gzip.decompress(path.read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:16] == b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"
    assert np.array_equal(idx.read_idx(path, 3), np.arange(6).reshape(1, 2, 3))
