import hashlib
import io
import tarfile

import numpy as np
import pytest

from lookalike.cli import main
from lookalike.errors import DownloadError
from lookalike.sources import read_stl10
from lookalike.sources.fetch import fetch_stl10
from tests.conftest import stl10_pattern


def _archive(root, n=40):
    """A small archive in STL-10's real layout: stl10_binary/{unlabeled_X,train_X,train_y}.bin."""
    buf = io.BytesIO()
    images = stl10_pattern(n)
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in [("unlabeled_X.bin", images.transpose(0, 3, 2, 1).tobytes()),
                           ("train_X.bin", images[:4].transpose(0, 3, 2, 1).tobytes()),
                           ("train_y.bin", bytes([1, 2, 3, 4]))]:
            info = tarfile.TarInfo(f"stl10_binary/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    (root / "stl10_binary.tar.gz").write_bytes(data)
    return data, images


def test_fetch_resumes_an_interrupted_download(http_server, tmp_path):
    url, www, cut_after, log = http_server
    data, images = _archive(www)
    md5 = hashlib.md5(data).hexdigest()
    cut_after["/stl10_binary.tar.gz"] = len(data) // 2
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch_stl10(dest, url + "/stl10_binary.tar.gz", md5=md5, progress=False)
    part = dest / "stl10_binary.tar.gz.part"
    assert part.stat().st_size == len(data) // 2
    assert not (dest / "stl10_binary").exists()  # nothing half-done is visible
    folder = fetch_stl10(dest, url + "/stl10_binary.tar.gz", md5=md5, progress=False)
    assert log[-1] == ("/stl10_binary.tar.gz", f"bytes={len(data) // 2}-")  # resumed, not restarted
    np.testing.assert_array_equal(read_stl10(folder / "unlabeled_X.bin"), images)
    assert sorted(p.name for p in dest.iterdir()) == ["stl10_binary"]  # archive and temp dirs gone


def test_fetch_rejects_a_bad_checksum(http_server, tmp_path):
    url, www, _, _ = http_server
    _archive(www)
    with pytest.raises(DownloadError, match="MD5 checksum mismatch"):
        fetch_stl10(tmp_path, url + "/stl10_binary.tar.gz", md5="0" * 32, progress=False)
    assert not (tmp_path / "stl10_binary").exists()


def test_fetch_offline_is_one_clear_line(closed_port_url, tmp_path, capsys):
    code = main(["-q", "fetch", "stl10", "--root", str(tmp_path), "--url", closed_port_url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot download" in err and "offline" in err and "pass another --url" in err


def test_fetch_cli_then_show(http_server, tmp_path, capsys):
    url, www, _, _ = http_server
    _archive(www)
    assert main(["-q", "fetch", "stl10", "--root", str(tmp_path), "--url", url + "/stl10_binary.tar.gz"]) == 0
    out = tmp_path / "show.png"
    assert main(["-q", "show", f"stl10:{tmp_path}", "--n", "4", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
