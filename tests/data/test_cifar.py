"""CIFAR-10/100 through the public API, from tiny files in the exact binary format.

The real specs expect 10000-record batches; tests shrink the record counts (and pin the tiny
archive's hash) with `dataclasses.replace`, keeping file names, record layout and checks."""

import dataclasses
import hashlib
import tarfile

import numpy as np
import pytest
import torch

from normlab.data import DatasetError, cifar, load_dataset

TRAIN_N, TEST_N = 6, 4


def _tiny_spec(spec, archive_bytes=b""):
    per_file = TRAIN_N if len(spec.train_files) == 1 else 2
    return dataclasses.replace(
        spec,
        train_files=tuple((name, per_file) for name, _ in spec.train_files),
        test_files=tuple((name, TEST_N) for name, _ in spec.test_files),
        archive=dataclasses.replace(spec.archive, sha256=hashlib.sha256(archive_bytes).hexdigest()),
    )


def _members(spec, formats):
    """{archive member name: bytes} and the expected train/test (images, labels)."""
    members, split = {}, {"train": [], "test": []}
    files = [("train", f) for f in spec.train_files] + [("test", f) for f in spec.test_files]
    for i, (which, (name, count)) in enumerate(files):
        data, images, labels = formats.cifar_records(count, spec.label_classes, seed=i)
        members[f"{spec.folder}/{name}"] = data
        split[which].append((images, labels))
    expected = {k: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for k, v in split.items()}
    return members, expected


@pytest.fixture(params=["cifar10", "cifar100"])
def tiny_archive(request, tmp_path, monkeypatch, formats):
    """Writes <root>/<name>/<archive> with tiny batches and installs a spec that pins it."""
    name = request.param
    real = cifar.CIFAR10 if name == "cifar10" else cifar.CIFAR100
    spec = _tiny_spec(real)
    members, expected = _members(spec, formats)
    members[f"{spec.folder}/readme.html"] = b"<html></html>"  # present in the real archive
    archive = formats.write_tar_gz(tmp_path / name / real.archive.name, members)
    spec = _tiny_spec(real, archive.read_bytes())
    monkeypatch.setattr(cifar, "CIFAR10" if name == "cifar10" else "CIFAR100", spec)
    return name, spec, tmp_path, expected


def test_archive_is_checked_extracted_and_parsed(tiny_archive):
    name, spec, root, expected = tiny_archive
    ds = load_dataset(name, root, download=False)
    assert ds.input_shape == (3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    n_train = 10 if name == "cifar10" else TRAIN_N  # cifar10: 5 files x 2 records
    assert ds.train_x.shape == (n_train, 3, 32, 32) and ds.test_x.shape == (TEST_N, 3, 32, 32)
    # pixels: R, G, B planes, row-major, exactly as written; labels: the (fine) label byte
    assert np.array_equal(ds.train_x.numpy(), expected["train"][0])
    assert np.array_equal(ds.test_x.numpy(), expected["test"][0])
    assert np.array_equal(ds.train_y.numpy(), expected["train"][1][:, -1])
    assert np.array_equal(ds.test_y.numpy(), expected["test"][1][:, -1])
    # mean/std per channel, pixel/255, from the train split only
    train = expected["train"][0].astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean.numpy(), train.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(ds.std.numpy(), train.std(axis=(0, 2, 3)), rtol=1e-6)
    # extracted files are now used on their own, without the archive
    for path in spec.paths(root / name):
        assert path.exists()
    (root / name / spec.archive.name).unlink()
    again = load_dataset(name, root, download=False)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_pixel_layout_is_channel_planes(tmp_path, monkeypatch):
    # One record with a known pattern: R plane = row index, G = column index, B = 7.
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    planes = np.stack([rows, cols, np.full((32, 32), 7)]).astype(np.uint8)
    record = bytes([3]) + planes.tobytes()
    spec = dataclasses.replace(
        cifar.CIFAR10,
        train_files=tuple((f"data_batch_{i}.bin", 1) for i in range(1, 6)),
        test_files=(("test_batch.bin", 1),),
    )
    for path in spec.paths(tmp_path / "cifar10"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record)
    monkeypatch.setattr(cifar, "CIFAR10", spec)
    ds = load_dataset("cifar10", tmp_path, download=False)
    image = ds.train_x[0]
    assert image[0, 5, 9] == 5 and image[1, 5, 9] == 9 and image[2, 5, 9] == 7
    assert ds.train_y.tolist() == [3] * 5 and ds.test_y.tolist() == [3]


def test_cifar100_coarse_labels(tiny_archive):
    name, spec, root, expected = tiny_archive
    if name != "cifar100":
        with pytest.raises(ValueError, match=r"'cifar10' has no option\(s\) \['labels'\]"):
            load_dataset(name, root, download=False, labels="coarse")
        with pytest.raises(ValueError, match="labels='coarse' is for cifar100"):
            cifar.load_cifar(spec, root, download=False, labels="coarse")
        return
    ds = load_dataset(name, root, download=False, labels="coarse")
    assert ds.num_classes == 20
    assert np.array_equal(ds.train_y.numpy(), expected["train"][1][:, 0])


def test_truncated_batch_is_an_error_naming_the_file(tiny_archive):
    name, spec, root, _ = tiny_archive
    load_dataset(name, root, download=False)
    victim = spec.paths(root / name)[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(
        DatasetError,
        match=rf"{victim.name}: \d+ bytes, expected \d+ records x "
        rf"{spec.label_bytes + 3072} bytes.*truncated",
    ):
        load_dataset(name, root, download=False)


def test_record_short_by_whole_records_is_not_silently_smaller(tiny_archive):
    name, spec, root, _ = tiny_archive
    load_dataset(name, root, download=False)
    victim = spec.paths(root / name)[-1]
    record = spec.label_bytes + 3072
    victim.write_bytes(victim.read_bytes()[:-record])  # one whole record missing
    with pytest.raises(DatasetError, match=rf"{victim.name}: .*expected {TEST_N} records"):
        load_dataset(name, root, download=False)


def test_out_of_range_label_is_an_error(tiny_archive):
    name, spec, root, _ = tiny_archive
    load_dataset(name, root, download=False)
    victim = spec.paths(root / name)[0]
    data = bytearray(victim.read_bytes())
    data[spec.label_bytes - 1] = 200  # first record's (fine) label
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=rf"{victim.name}: record 0 has label 200, expected 0\.\.\d+"):
        load_dataset(name, root, download=False)


def test_archive_with_wrong_hash_is_refused(tiny_archive):
    name, spec, root, _ = tiny_archive
    archive = root / name / spec.archive.name
    archive.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(DatasetError, match=rf"{spec.archive.name}: SHA-256 is .*expected {spec.archive.sha256}"):
        load_dataset(name, root, download=False)


def test_traversal_archive_is_refused(tmp_path, monkeypatch, formats):
    members, _ = _members(_tiny_spec(cifar.CIFAR10), formats)
    members["cifar-10-batches-bin/../../../escape.txt"] = b"gotcha"
    archive = formats.write_tar_gz(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", members)
    monkeypatch.setattr(cifar, "CIFAR10", _tiny_spec(cifar.CIFAR10, archive.read_bytes()))
    with pytest.raises(DatasetError, match="path traversal"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not list(tmp_path.rglob("escape.txt"))


def test_symlink_archive_is_refused(tmp_path, monkeypatch, formats):
    members, _ = _members(_tiny_spec(cifar.CIFAR10), formats)
    link = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = formats.write_tar_gz(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", members, [link])
    monkeypatch.setattr(cifar, "CIFAR10", _tiny_spec(cifar.CIFAR10, archive.read_bytes()))
    with pytest.raises(DatasetError, match="is a link"):
        load_dataset("cifar10", tmp_path, download=False)


def test_offline_without_files_says_where_to_put_them(tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"download=False: put cifar-10-binary\.tar\.gz "
        r"\(SHA-256 c4a38c50.*\) in .*cifar10, or extract it",
    ):
        load_dataset("cifar10", tmp_path, download=False)


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    import pooch

    def offline(url, **kw):
        raise OSError("network unreachable")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DatasetError, match=r"could not download cifar-100-binary\.tar\.gz.*offline"):
        load_dataset("cifar100", tmp_path)


def test_real_specs_describe_the_published_distributions():
    # Record counts and layout of the real files (what the size checks enforce).
    assert [n for _, n in cifar.CIFAR10.train_files] == [10000] * 5
    assert cifar.CIFAR10.test_files == (("test_batch.bin", 10000),)
    assert cifar.CIFAR100.train_files == (("train.bin", 50000),)
    assert cifar.CIFAR100.label_bytes == 2 and cifar.CIFAR100.label_classes == (20, 100)
