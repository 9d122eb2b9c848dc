import hashlib
import os

import numpy as np
import pytest

from ego_assets.lib import keys
from ego_assets.lib.storage import Store


def test_slugify_folds_accents_and_spaces():
    assert keys.slugify("Vidéo de Test 1") == "video-de-test-1"
    assert keys.slugify("../../etc/passwd") == "etc-passwd"
    assert keys.slugify("日本語") == "x"


def _key(source, path):
    from ego_assets.lib.sources import Source, discover_file

    return discover_file(Source(name=source, uri=str(path.parent)), str(path)).partition_key


def test_key_is_deterministic_from_source_and_content(tmp_path):
    a = tmp_path / "a video.mp4"
    b = tmp_path / "sub" / "copie é.mp4"
    b.parent.mkdir()
    data = bytes(range(256)) * 20000  # > 3 MiB
    a.write_bytes(data)
    b.write_bytes(data)
    ka, kb = _key("src", a), _key("src", b)
    assert ka == kb and keys.KEY_RE.match(ka) and len(ka) <= 100
    # the content part is a prefix of the file's full SHA-256
    assert ka == "src-" + hashlib.sha256(data).hexdigest()[:keys.CONTENT_ID_LEN]
    assert _key("other", a) != ka
    c = tmp_path / "c.mp4"
    mid = bytearray(data)
    mid[len(mid) // 2] ^= 1
    c.write_bytes(bytes(mid))
    assert _key("src", c) != ka
    # the longest source name still makes a key within 100 characters
    assert len(keys.partition_key("s" * 60, keys.content_id(hashlib.sha256(data).hexdigest()))) <= 100


def test_different_content_outside_sampled_blocks_gets_different_keys(tmp_path):
    """Issue 16 item 1: two 16 MiB files that differ only in 200 KB zeroed at 3 MiB (outside the head,
    middle and tail blocks the old key sampled) had the same key: the second video was the first."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 16 << 20, dtype=np.uint8).tobytes()
    other = bytearray(data)
    other[3 << 20:(3 << 20) + 200_000] = bytes(200_000)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(data)
    b.write_bytes(bytes(other))
    assert hashlib.sha256(data).hexdigest() != hashlib.sha256(bytes(other)).hexdigest()
    assert _key("src", a) != _key("src", b)


def test_identity_cache_skips_unchanged_files_and_rehashes_changed_ones(tmp_path, monkeypatch):
    from ego_assets.lib import sources
    from ego_assets.lib.sources import Source, discover_file

    v = tmp_path / "v.mp4"
    v.write_bytes(b"a" * 1000)
    src = Source(name="s", uri=str(tmp_path))
    ids: dict = {}
    k1 = discover_file(src, str(v), ids).partition_key
    calls = []
    real = sources.file_sha256
    monkeypatch.setattr(sources, "file_sha256", lambda fs, p: calls.append(p) or real(fs, p))
    assert discover_file(src, str(v), ids).partition_key == k1 and calls == []  # cached
    v.write_bytes(b"b" * 1000)  # same size, new content and mtime
    os.utime(v, (1, 1))
    k2 = discover_file(src, str(v), ids).partition_key
    assert calls == [str(v)] and k2 != k1


def test_content_id_wants_a_full_digest():
    with pytest.raises(ValueError):
        keys.content_id("abc")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "A", "x" * 101, "a b", "é"])
def test_invalid_keys_are_rejected(bad, tmp_path):
    with pytest.raises(ValueError):
        keys.check_key(bad)
    with pytest.raises(ValueError):
        Store(str(tmp_path)).artifact_dir("frames", bad)


@pytest.mark.parametrize("bad", ["../evil", "Big", "-x", "a" * 61, ""])
def test_source_names_are_validated(bad):
    with pytest.raises(ValueError, match="source name"):
        keys.validate_source_name(bad)
