import fsspec
import pytest

from ego_assets.lib import keys
from ego_assets.lib.storage import Store


def test_slugify_folds_accents_and_spaces():
    assert keys.slugify("Vidéo de Test 1") == "video-de-test-1"
    assert keys.slugify("../../etc/passwd") == "etc-passwd"
    assert keys.slugify("日本語") == "x"


def test_key_is_deterministic_from_source_and_content(tmp_path):
    a = tmp_path / "a video.mp4"
    b = tmp_path / "sub" / "copie é.mp4"
    b.parent.mkdir()
    data = bytes(range(256)) * 20000  # > 3 MiB so head/middle/tail blocks differ
    a.write_bytes(data)
    b.write_bytes(data)
    fs = fsspec.filesystem("file")
    ka = keys.partition_key("src", keys.file_content_id(fs, str(a)))
    kb = keys.partition_key("src", keys.file_content_id(fs, str(b)))
    assert ka == kb and keys.KEY_RE.match(ka) and len(ka) <= 100
    assert keys.partition_key("other", keys.file_content_id(fs, str(a))) != ka
    # one changed byte in the middle block changes the key
    c = tmp_path / "c.mp4"
    mid = bytearray(data)
    mid[len(mid) // 2] ^= 1
    c.write_bytes(bytes(mid))
    assert keys.partition_key("src", keys.file_content_id(fs, str(c))) != ka


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
