"""Partition keys (docs/architecture.md §2): ``[a-z0-9_-]``, at most 100 characters, derived deterministically from
the source name and the video's content, so the same video found twice maps to the same key and a key can
never name a path outside the storage root."""

from __future__ import annotations

import hashlib
import re
import unicodedata

KEY_RE = re.compile(r"^[a-z0-9_-]{1,100}$")
MAX_KEY_LEN = 100
# 32 hex digits (128 bits) of the file's full SHA-256: with the longest source name (60) the key stays
# within 100 characters, and two different files share a key only if SHA-256 collides on 128 bits.
CONTENT_ID_LEN = 32
SOURCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")
_CHUNK = 8 << 20


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


def file_sha256(fs, path, chunk: int = _CHUNK) -> str:
    """SHA-256 of the whole file (hex), read through the fsspec filesystem ``fs`` (None: a local path).
    The one file hash of the project: partition keys, model files, dataset files. Identity is always
    decided on the full content: a sample of blocks (size, head, middle, tail) let two different 16 MB
    files share a key (issue 16)."""
    h = hashlib.sha256()
    with (open(path, "rb") if fs is None else fs.open(path, "rb")) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def content_id(sha256_hex: str) -> str:
    """The content part of a partition key: a prefix of the file's full SHA-256."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256_hex or ""):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return sha256_hex[:CONTENT_ID_LEN]


def partition_key(source: str, cid: str) -> str:
    key = f"{validate_source_name(source)}-{cid}"
    return check_key(key)


def check_key(key: str) -> str:
    """Raise unless ``key`` is a valid partition key (guards every path built from a key)."""
    if not isinstance(key, str) or not KEY_RE.match(key) or key in {".", ".."}:
        raise ValueError(f"invalid partition key {key!r}: expected 1-100 characters of [a-z0-9_-]")
    return key
