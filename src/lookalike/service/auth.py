"""API keys: a file of `SCOPE KEY` lines, keys sent as `Authorization: Bearer KEY`.

Scopes are `read` and `write` (a write key reads too). Without a key file, reads are open
and writes are refused with 403 saying how to enable them. With read keys in the file, reads
need a key too. Keys are compared in constant time (`hmac.compare_digest`, against every key,
whatever matches first) and never logged nor echoed: errors about the file name its line,
not its content.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParameter
from ..text import printable
from .errors import Forbidden, Unauthorized

SCOPES = ("read", "write")
MIN_KEY_CHARS = 16  # a key shorter than this is guessable; refused at start


@dataclass(frozen=True)
class Keys:
    """The keys of each scope (empty: no key file)."""

    read: tuple[bytes, ...] = ()
    write: tuple[bytes, ...] = ()

    @classmethod
    def load(cls, path: str | Path | None) -> Keys:
        """Keys from `path` (None: no keys). Blank lines and lines starting with # are skipped."""
        if path is None:
            return cls()
        path = Path(path)
        name = printable(str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidParameter(f"--api-key-file {name}: no such file") from None
        except IsADirectoryError:
            raise InvalidParameter(f"--api-key-file {name}: is a folder, not a file of keys") from None
        except UnicodeDecodeError:
            raise InvalidParameter(f"--api-key-file {name}: not UTF-8 text") from None
        except OSError as exc:
            raise InvalidParameter(f"--api-key-file {name}: cannot read it ({exc.strerror})") from None
        found: dict[str, list[bytes]] = {s: [] for s in SCOPES}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in SCOPES:
                raise InvalidParameter(f"--api-key-file {name}, line {n}: expected 'read KEY' or 'write KEY' "
                                       "(the scope, a space, the key)")
            if len(parts[1]) < MIN_KEY_CHARS or not parts[1].isascii():
                raise InvalidParameter(f"--api-key-file {name}, line {n}: a key must be {MIN_KEY_CHARS} or more "
                                       "ASCII characters (for example: python -c 'import secrets; "
                                       "print(secrets.token_urlsafe())')")
            found[parts[0]].append(parts[1].encode())
        if not found["read"] and not found["write"]:
            raise InvalidParameter(f"--api-key-file {name}: holds no key; add lines such as 'write KEY'")
        return cls(tuple(found["read"]), tuple(found["write"]))

    @property
    def reads_need_key(self) -> bool:
        return bool(self.read)

    def scope_of(self, authorization: str | None) -> str | None:
        """'write', 'read' or None (no key, or one not in the file) for an Authorization header."""
        sent = _bearer(authorization)
        if sent is None:
            return None
        is_write = _any_equal(sent, self.write)
        is_read = _any_equal(sent, self.read)
        return "write" if is_write else "read" if is_read else None

    def check_read(self, authorization: str | None) -> None:
        if not self.reads_need_key:
            return
        if authorization is None:
            raise Unauthorized("this server needs an API key to read: send 'Authorization: Bearer KEY'",
                               code="key_required")
        if self.scope_of(authorization) is None:
            raise Unauthorized("the API key sent is not valid", code="bad_key")

    def check_write(self, authorization: str | None) -> None:
        if not self.write:
            raise Forbidden("writes are off on this server: start it with --api-key-file FILE, a file holding "
                            "a line 'write KEY', and send 'Authorization: Bearer KEY'", code="writes_disabled")
        if authorization is None:
            raise Unauthorized("adding or deleting images needs a write key: send 'Authorization: Bearer KEY'",
                               code="key_required")
        scope = self.scope_of(authorization)
        if scope is None:
            raise Unauthorized("the API key sent is not valid", code="bad_key")
        if scope != "write":
            raise Forbidden("this API key may read, not write", code="read_only_key")


def _bearer(authorization: str | None) -> bytes | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "replace")


def _any_equal(sent: bytes, keys: tuple[bytes, ...]) -> bool:
    """Whether `sent` is one of `keys`, comparing with every key in constant time."""
    hit = False
    for key in keys:
        hit |= hmac.compare_digest(sent, key)
    return hit
