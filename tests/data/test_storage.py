import functools
import hashlib
import http.server
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from normlab.data import DatasetError, data_root
from normlab.data.storage import RemoteFile, atomic_write, check_sha256, fetch, new_file_mode, safe_extract, sha256_file


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("NORMLAB_DATA")
    import platformdirs

    assert data_root() == Path(platformdirs.user_cache_dir("normlab"))


def test_sha256_file_and_check(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    check_sha256(path, hashlib.sha256(b"abc" * 1000).hexdigest())
    with pytest.raises(DatasetError, match=r"f\.bin: SHA-256 is .* expected 00+"):
        check_sha256(path, "0" * 64)


def _remote(data: bytes) -> RemoteFile:
    return RemoteFile("thing.tar.gz", ("https://example.invalid/thing.tar.gz",), hashlib.sha256(data).hexdigest())


def test_fetch_uses_a_present_file_without_downloading(tmp_path, monkeypatch):
    import pooch

    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("must not download"))
    (tmp_path / "thing.tar.gz").write_bytes(b"payload")
    assert fetch(_remote(b"payload"), tmp_path, download=True, hint="") == tmp_path / "thing.tar.gz"
    with pytest.raises(DatasetError, match="damaged or not the published version"):
        fetch(_remote(b"other"), tmp_path, download=True, hint="")


def test_fetch_offline_or_disabled_says_where_to_put_the_file(tmp_path, monkeypatch):
    import pooch

    with pytest.raises(DatasetError, match=r"download=False: put thing\.tar\.gz .* in .*or unpack"):
        fetch(_remote(b"x"), tmp_path, download=False, hint="or unpack it")

    def offline(url, **kw):
        raise ConnectionError(f"no route to {url}")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(
        DatasetError,
        match=r"could not download thing\.tar\.gz.*no route.*"
        r"offline, put thing\.tar\.gz",
    ):
        fetch(_remote(b"x"), tmp_path, download=True, hint="")


def test_fetch_tries_mirrors_in_order(tmp_path, monkeypatch):
    import pooch

    tried = []

    def flaky(url, known_hash, fname, path, progressbar):
        tried.append(url)
        if "first" in url:
            raise ConnectionError("down")
        assert known_hash == "sha256:" + hashlib.sha256(b"ok").hexdigest()
        (Path(path) / fname).write_bytes(b"ok")

    monkeypatch.setattr(pooch, "retrieve", flaky)
    remote = RemoteFile("f.gz", ("https://first/f.gz", "https://second/f.gz"), hashlib.sha256(b"ok").hexdigest())
    assert fetch(remote, tmp_path / "d", download=True, hint="").read_bytes() == b"ok"
    assert tried == ["https://first/f.gz", "https://second/f.gz"]


def test_safe_extract_extracts_only_wanted_members(formats, tmp_path):
    archive = formats.write_tar_gz(
        tmp_path / "a.tar.gz", {"top/a.bin": b"A", "top/b.bin": b"BB", "top/readme.html": b"<html>"}
    )
    safe_extract(archive, tmp_path / "out", {"top/a.bin", "top/b.bin"})
    assert (tmp_path / "out/top/a.bin").read_bytes() == b"A"
    assert (tmp_path / "out/top/b.bin").read_bytes() == b"BB"
    assert not (tmp_path / "out/top/readme.html").exists()
    # no temporary extraction directory is left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["top"]


def test_safe_extract_reports_missing_members(formats, tmp_path):
    archive = formats.write_tar_gz(tmp_path / "a.tar.gz", {"top/a.bin": b"A"})
    with pytest.raises(DatasetError, match=r"a\.tar\.gz: archive lacks \['top/b\.bin'\]"):
        safe_extract(archive, tmp_path / "out", {"top/a.bin", "top/b.bin"})
    assert not (tmp_path / "out/top/a.bin").exists()  # nothing half-extracted


def test_safe_extract_wants_regular_files_not_directories(tmp_path):
    # A directory entry with a wanted file's name used to count as found and was moved into place,
    # so the loader later failed on a directory instead of naming the incomplete archive.
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        directory = tarfile.TarInfo("top/a.bin")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
    with pytest.raises(DatasetError, match=r"a\.tar\.gz: archive lacks \['top/a\.bin'\]"):
        safe_extract(archive, tmp_path / "out", {"top/a.bin"})
    assert not (tmp_path / "out/top/a.bin").exists()


# ".." anywhere is refused, even where the path would normalize back inside ("top/..").
@pytest.mark.parametrize(
    "bad_name", ["../escape.bin", "top/../../escape.bin", "/abs/escape.bin", "./../escape.bin", "..", "top/.."]
)
def test_safe_extract_refuses_path_traversal(formats, tmp_path, bad_name):
    archive = formats.write_tar_gz(tmp_path / "a.tar.gz", {"top/a.bin": b"A", bad_name: b"evil"})
    with pytest.raises(DatasetError, match="path traversal"):
        safe_extract(archive, tmp_path / "out", {"top/a.bin"})
    assert not (tmp_path / "escape.bin").exists()
    assert not (tmp_path / "out/top/a.bin").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_safe_extract_refuses_links(formats, tmp_path, kind):
    link = tarfile.TarInfo("top/a.bin")
    link.type, link.linkname = kind, "/etc/passwd"
    archive = formats.write_tar_gz(tmp_path / "a.tar.gz", {}, extra=[link])
    with pytest.raises(DatasetError, match=r"member 'top/a\.bin' is a link"):
        safe_extract(archive, tmp_path / "out", {"top/a.bin"})


def test_safe_extract_reports_truncated_and_corrupt_archives(formats, tmp_path):
    good = formats.write_tar_gz(tmp_path / "a.tar.gz", {"top/a.bin": bytes(range(256)) * 400})
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"t\.tar\.gz: cannot read the archive.*truncated or corrupt"):
        safe_extract(truncated, tmp_path / "out", {"top/a.bin"})
    garbage = tmp_path / "g.tar.gz"
    garbage.write_bytes(b"this is not gzip at all" * 10)
    with pytest.raises(DatasetError, match=r"g\.tar\.gz: cannot read the archive"):
        safe_extract(garbage, tmp_path / "out", {"top/a.bin"})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_mode_is_what_open_gives(tmp_path, umask):
    (tmp_path / "plain").write_bytes(b"")
    assert new_file_mode(tmp_path) == _mode(tmp_path / "plain") == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]  # the probe is gone


def test_atomic_write_honours_the_umask_and_replaces(tmp_path, umask):
    path = tmp_path / "sub" / "f.bin"
    atomic_write(path, lambda handle: handle.write(b"one"))
    atomic_write(path, lambda handle: handle.write(b"two"))
    assert path.read_bytes() == b"two" and _mode(path) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def half_then_crash(handle):
        handle.write(b"ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over `tmp_path / "srv"`: (directory, base URL)."""
    served = tmp_path / "srv"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def test_downloaded_file_honours_the_umask(tmp_path, http_dir, umask):
    # pooch downloads into a NamedTemporaryFile (mode 0o600) and moves it into place: other users
    # of a shared data folder could not read the archive.
    served, url = http_dir
    (served / "thing.tar.gz").write_bytes(b"payload")
    remote = RemoteFile("thing.tar.gz", (f"{url}/thing.tar.gz",), hashlib.sha256(b"payload").hexdigest())
    path = fetch(remote, tmp_path / "data", download=True, hint="")
    assert path.read_bytes() == b"payload" and _mode(path) == 0o666 & ~umask


def test_extracted_files_honour_the_umask(formats, tmp_path, umask):
    private = tarfile.TarInfo("top/private.bin")
    private.size, private.mode = 3, 0o600
    archive = formats.write_tar_gz(tmp_path / "a.tar.gz", {"top/a.bin": b"A"}, [private])
    safe_extract(archive, tmp_path / "out", {"top/a.bin", "top/private.bin"})
    for name in ("a.bin", "private.bin"):
        assert _mode(tmp_path / "out/top" / name) == 0o666 & ~umask
