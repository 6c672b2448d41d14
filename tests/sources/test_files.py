"""Which files a folder uses (files.py): every name is used or listed once, with the reason;
nothing that is not a regular file is opened."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import SourceError
from lookalike.sources import FolderSource, files, load_image, read_header


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)
    return path


def _plain_walk(root: Path) -> list[str]:
    """The order os.walk gave before links were followed: a folder's files, then its folders."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(filenames)]
    return out


def test_order_is_unchanged_for_a_plain_tree(tmp_path):
    for rel in ("b.png", "a/z.png", "a/b/c.png", "a/a.png", "c/x.png", "B.png", "a/b/a.png"):
        _png(tmp_path / rel)
    src = FolderSource(tmp_path, size=16, progress=False)
    assert src.ids == _plain_walk(tmp_path) and src.skipped == []


def test_links_are_followed_once_and_loops_listed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _png(root / "a.png")
    _png(outside / "deep" / "o.png")
    os.symlink(outside, root / "link")  # a folder outside, through a link: used
    os.symlink(outside, root / "link2")  # the same folder again: listed, not walked twice
    os.symlink(root, root / "link" / "deep" / "back")  # a loop back to the top: listed
    os.symlink("a.png", root / "alias.png")  # a link to a file: used (a second id for it)
    src = FolderSource(root, size=16, progress=False)
    assert src.ids == ["a.png", "alias.png", "link/deep/o.png"]
    reasons = {os.path.relpath(s.path, root): s.reason for s in src.skipped}
    assert set(reasons) == {"link2", "link/deep/back"}
    assert all("walked once" in r for r in reasons.values())
    np.testing.assert_array_equal(src.read([1]), src.read([0]))


def test_hidden_broken_special_and_unlistable_names_are_listed(tmp_path, monkeypatch):
    _png(tmp_path / "ok.png")
    _png(tmp_path / ".hidden.png")
    _png(tmp_path / ".thumbs" / "t.png")
    _png(tmp_path / "closed" / "inside.png")
    os.symlink("gone.png", tmp_path / "broken.png")
    os.symlink("self.png", tmp_path / "self.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/null", tmp_path / "null.png")
    real_scandir = os.scandir

    def scandir(path):  # root may list any folder: refuse one the way an unreadable folder is
        if Path(path).name == "closed":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    src = FolderSource(tmp_path, size=16, progress=False)
    assert src.ids == ["ok.png"]
    reasons = {os.path.relpath(s.path, tmp_path): s.reason for s in src.skipped}
    assert reasons == {
        ".hidden.png": "hidden file, not used",
        ".thumbs": "hidden folder, not looked into",
        "closed": "cannot list this folder (permission denied); nothing in it is used",
        "broken.png": "broken symbolic link",
        "self.png": "symbolic link loop",
        "pipe.jpg": "not a regular file (a FIFO); not opened",
        "null.png": "not a regular file (a character device); not opened",
    }


def test_a_file_swapped_for_a_fifo_after_listing_is_refused_not_opened(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    src = FolderSource(tmp_path, size=16, progress=False)
    os.remove(tmp_path / "b.png")
    os.mkfifo(tmp_path / "b.png")
    images, failed = src.read_available([0, 1])  # would block forever if the FIFO were opened
    assert len(images) == 1 and failed[1].reason == "not a regular file (a FIFO); not opened"
    with pytest.raises(SourceError, match="a FIFO"):
        read_header(tmp_path / "b.png")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), r"is a folder, not an image file$"),
    (lambda p: os.mkfifo(p), r"not a regular file \(a FIFO\); not opened$"),
    (lambda p: os.symlink("nowhere", p), r"broken symbolic link$"),
    (lambda p: None, r"no such file$"),
    (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)$"),
])
def test_query_paths_say_what_they_are(tmp_path, make, message):
    path = tmp_path / "q.png"
    make(path)
    with pytest.raises(SourceError, match=rf"^{tmp_path}/q.png: {message}"):
        load_image(path, 32)


def test_names_are_escaped_in_messages_and_invalid_utf8_names_listed(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "evil\nname.png").write_bytes(b"garbage")
    _png(tmp_path / os.fsdecode(b"caf\xe9.png"))
    src = FolderSource(tmp_path, size=16, progress=False)
    reasons = {Path(s.path).name: s.reason for s in src.skipped}
    assert "not valid UTF-8" in reasons[os.fsdecode(b"caf\xe9.png")]
    with pytest.raises(SourceError) as caught:
        load_image(tmp_path / "evil\nname.png", 32)
    assert "\n" not in str(caught.value) and "evil\\nname.png" in str(caught.value)
