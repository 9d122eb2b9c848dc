"""Partition keys (DESIGN §2): ``[a-z0-9_-]``, at most 100 characters, derived deterministically from
the source name and the video's content, so the same video found twice maps to the same key and a key can
never name a path outside the storage root."""

from __future__ import annotations

import hashlib
import re
import unicodedata

KEY_RE = re.compile(r"^[a-z0-9_-]{1,100}$")
MAX_KEY_LEN = 100
CONTENT_ID_LEN = 16
SOURCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")
_BLOCK = 1 << 20


def slugify(text: str, max_len: int = 60) -> str:
    """Lowercase ASCII slug of ``text`` with ``[a-z0-9_-]`` only (accents folded, the rest -> '-')."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_]+", "-", folded.lower()).strip("-_")
    return slug[:max_len].strip("-_") or "x"


def validate_source_name(name: str) -> str:
    if not isinstance(name, str) or not SOURCE_NAME_RE.match(name):
        raise ValueError(
            f"source name {name!r} is not allowed: use 1-60 characters of [a-z0-9_-], starting with a "
            "letter or digit (it becomes part of partition keys and storage paths)")
    return name


def content_id(read_at, size: int) -> str:
    """A content fingerprint: SHA-256 of the size and three 1 MiB blocks (head, middle, tail).

    ``read_at(offset, n) -> bytes``. Reading 3 MiB instead of the whole file keeps discovery cheap on
    large sources; the full SHA-256 is computed once by ``source_videos`` and stored in ``videos``."""
    h = hashlib.sha256(str(size).encode())
    offsets = sorted({0, max(0, size // 2 - _BLOCK // 2), max(0, size - _BLOCK)})
    for off in offsets:
        h.update(read_at(off, _BLOCK))
    return h.hexdigest()[:CONTENT_ID_LEN]


def file_content_id(fs, path: str) -> str:
    size = fs.size(path)
    with fs.open(path, "rb") as f:
        def read_at(off: int, n: int) -> bytes:
            f.seek(off)
            return f.read(n)
        return content_id(read_at, size)


def partition_key(source: str, cid: str) -> str:
    key = f"{validate_source_name(source)}-{cid}"
    return check_key(key)


def check_key(key: str) -> str:
    """Raise unless ``key`` is a valid partition key (guards every path built from a key)."""
    if not isinstance(key, str) or not KEY_RE.match(key) or key in {".", ".."}:
        raise ValueError(f"invalid partition key {key!r}: expected 1-100 characters of [a-z0-9_-]")
    return key
