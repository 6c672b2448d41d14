"""API keys: the key file, read keys, read-only keys, writes off."""

from __future__ import annotations

import httpx
import pytest

from lookalike.errors import InvalidParameter
from lookalike.service.auth import Keys
from lookalike.service.errors import Forbidden, Unauthorized

from .conftest import READ_KEY, WRITE_KEY


def test_key_file_lines(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# comment\n\nread {READ_KEY}\nwrite {WRITE_KEY}\n")
    keys = Keys.load(f)
    assert keys.reads_need_key and keys.scope_of(f"Bearer {WRITE_KEY}") == "write"
    assert keys.scope_of(f"bearer {READ_KEY}") == "read" and keys.scope_of("Bearer nope") is None
    assert keys.scope_of(None) is None and keys.scope_of(f"Basic {READ_KEY}") is None
    keys.check_write(f"Bearer {WRITE_KEY}")
    keys.check_read(f"Bearer {WRITE_KEY}")  # a write key reads too
    with pytest.raises(Forbidden, match="may read, not write"):
        keys.check_write(f"Bearer {READ_KEY}")
    with pytest.raises(Unauthorized, match="needs an API key"):
        keys.check_read(None)


@pytest.mark.parametrize("text, words", [
    ("admin sekrit-sekrit-sekrit-1\n", "line 1: expected 'read KEY' or 'write KEY'"),
    ("write short\n", "line 1: a key must be 16 or more"),
    ("# nothing\n", "holds no key"),
    ("read a b c\n", "line 1"),
])
def test_bad_key_files_say_which_line_and_never_the_key(tmp_path, text, words):
    f = tmp_path / "keys"
    f.write_text(text)
    with pytest.raises(InvalidParameter, match=words) as caught:
        Keys.load(f)
    assert "sekrit" not in str(caught.value) and "short" not in str(caught.value)[-20:]
    with pytest.raises(InvalidParameter, match="no such file"):
        Keys.load(tmp_path / "missing")


def test_no_key_file_means_open_reads_and_no_writes():
    keys = Keys.load(None)
    keys.check_read(None)
    with pytest.raises(Forbidden, match="--api-key-file"):
        keys.check_write(f"Bearer {WRITE_KEY}")


def test_a_server_with_read_keys(thread_server, tmp_path, photos):
    f = tmp_path / "keys"
    f.write_text(f"read {READ_KEY}\nwrite {WRITE_KEY}\n")
    s = thread_server(api_key_file=f)
    with httpx.Client(base_url=s.url, timeout=60) as c:
        assert c.get("/healthz").status_code == 200  # health, readiness and the page need no key
        assert c.get("/readyz").status_code == 200 and c.get("/").status_code == 200
        r = c.get("/v1/index")
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_required"
        assert c.get("/v1/index", headers={"Authorization": "Bearer wrong-key-wrong-key"}).status_code == 401
        assert c.get("/v1/index", headers={"Authorization": f"Bearer {READ_KEY}"}).json()["reads_need_key"] is True
        r = c.post("/v1/images", files={"images": ("a.jpg", photos[0], "image/jpeg")},
                   headers={"Authorization": f"Bearer {READ_KEY}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "read_only_key"
        assert c.get("/v1/index", headers={"Authorization": f"Bearer {READ_KEY}"}).json()["count"] == 40
