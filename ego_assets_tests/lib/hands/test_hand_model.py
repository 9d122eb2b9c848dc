"""Model provisioning (scripts/provision_hand_model.py): bundle building on a fake wheel; verification
(ego_assets.lib.hands.model) and the real model loading."""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ego_assets.lib.keys import file_sha256
from ego_assets.lib.hands import model as hm
from scripts import provision_hand_model as prov

PALM = "mediapipe/modules/palm_detection/palm_detection_full.tflite"
LAND = "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def fake_wheel(tmp_path) -> tuple[Path, dict]:
    """A tiny zip laid out like the mediapipe wheel, and the members mapping for it."""
    palm, land = b"palm-network" * 100, b"landmark-network" * 300
    whl = tmp_path / "fake.whl"
    with zipfile.ZipFile(whl, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(PALM, palm)
        z.writestr(LAND, land)
        z.writestr("mediapipe/__init__.py", "")
    members = {"hand_detector.tflite": (PALM, _sha(palm)),
               "hand_landmarks_detector.tflite": (LAND, _sha(land))}
    return whl, members


@pytest.fixture
def fake_variants(monkeypatch, fake_wheel, tmp_path):
    """Make the fake wheel's bundle the one known 'full' variant, with default path in tmp."""
    whl, members = fake_wheel
    ref = prov.build_bundle(whl, tmp_path / "ref" / "x.task", members)
    v = hm.Variant("full", "hand_landmarker.task", members, file_sha256(None, ref), "fake full")
    monkeypatch.setattr(hm, "VARIANTS", {"full": v})
    monkeypatch.setattr(hm, "KNOWN_MODELS", {v.built_sha256: v.description})
    monkeypatch.setattr(hm, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.delenv(hm.MODELS_DIR_ENV, raising=False)
    return whl, v


def test_bundle_layout_is_an_uncompressed_task_bundle(fake_wheel, tmp_path):
    whl, members = fake_wheel
    out = prov.build_bundle(whl, tmp_path / "m" / "hand_landmarker.task", members)
    with zipfile.ZipFile(out) as z:
        infos = z.infolist()
        assert [i.filename for i in infos] == ["hand_detector.tflite", "hand_landmarks_detector.tflite"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)  # MediaPipe rejects compressed
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        with zipfile.ZipFile(whl) as w:
            assert z.read("hand_detector.tflite") == w.read(PALM)
            assert z.read("hand_landmarks_detector.tflite") == w.read(LAND)
    assert not list(out.parent.glob("*.tmp"))  # atomic write left nothing behind


def test_bundle_is_byte_deterministic(fake_wheel, tmp_path):
    whl, members = fake_wheel
    a = prov.build_bundle(whl, tmp_path / "a.task", members)
    os.utime(whl, (1e9, 1e9))  # the source's timestamps must not leak into the bundle
    b = prov.build_bundle(whl, tmp_path / "b.task", members)
    assert a.read_bytes() == b.read_bytes()


def test_bundle_refuses_unexpected_wheel_contents(fake_wheel, tmp_path):
    whl, members = fake_wheel
    wrong = dict(members)
    wrong["hand_detector.tflite"] = (PALM, "0" * 64)
    with pytest.raises(prov.ProvisionError, match="sha256"):
        prov.build_bundle(whl, tmp_path / "x.task", wrong)
    missing = {"hand_detector.tflite": ("mediapipe/nope.tflite", None)}
    with pytest.raises(prov.ProvisionError, match="has no mediapipe/nope.tflite"):
        prov.build_bundle(whl, tmp_path / "x.task", missing)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(prov.ProvisionError, match="not a readable zip"):
        prov.build_bundle(junk, tmp_path / "x.task", members)
    assert not (tmp_path / "x.task").exists()


def test_provision_is_idempotent_and_fast(fake_variants, tmp_path):
    whl, v = fake_variants
    logs = []
    (dest,) = prov.provision(wheel=whl, log=logs.append)
    assert dest == tmp_path / "repo" / "models" / "hand_landmarker.task"
    assert file_sha256(None, dest) == v.built_sha256
    mtime = dest.stat().st_mtime_ns
    t0 = time.perf_counter()
    prov.provision(wheel=Path("/nonexistent.whl"), log=logs.append)  # must not even look at the wheel
    assert time.perf_counter() - t0 < 0.5
    assert dest.stat().st_mtime_ns == mtime
    assert "hand model ok" in logs[-1]
    # a corrupted file is rebuilt
    dest.write_bytes(b"garbage")
    prov.provision(wheel=whl, log=logs.append)
    assert file_sha256(None, dest) == v.built_sha256
    assert hm.resolve_model() == dest


def test_provision_from_file_requires_a_known_hash(fake_variants, tmp_path):
    whl, v = fake_variants
    good = prov.build_bundle(whl, tmp_path / "dl" / "hand_landmarker.task", v.members)
    (dest,) = prov.provision(dest=tmp_path / "o" / "m.task", from_file=good, log=lambda s: None)
    assert dest.read_bytes() == good.read_bytes()
    other = tmp_path / "other.task"
    other.write_bytes(b"something else")
    with pytest.raises(prov.ProvisionError, match="not a known hand model"):
        prov.provision(dest=tmp_path / "o2" / "m.task", from_file=other, log=lambda s: None)


def test_resolve_model_errors_say_how_to_provision(fake_variants, tmp_path, monkeypatch):
    with pytest.raises(hm.HandModelError, match="no such file.*provision"):
        hm.resolve_model()
    default = tmp_path / "repo" / "models" / "hand_landmarker.task"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"truncated download")
    with pytest.raises(hm.HandModelError, match="not a hand landmarker bundle.*provision"):
        hm.resolve_model()
    # a valid bundle with other networks at the default path is not accepted silently either
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr(PALM, b"p2")
        z.writestr(LAND, b"l2")
    prov.build_bundle(other, default, {"hand_detector.tflite": (PALM, None),
                                     "hand_landmarks_detector.tflite": (LAND, None)})
    with pytest.raises(hm.HandModelError, match="matches no known model"):
        hm.resolve_model()
    # ... but the same file named explicitly is the user's choice: accepted with a warning
    monkeypatch.setenv(hm.MODEL_ENV, str(default))
    with pytest.warns(UserWarning, match="unverified sha256"):
        assert hm.resolve_model() == default
    assert hm.model_info(default)["model_kind"] == "unverified"
    monkeypatch.setenv(hm.MODEL_ENV, str(tmp_path / "missing.task"))
    with pytest.raises(hm.HandModelError, match=f"missing.task \\({hm.MODEL_ENV}\\): no such file"):
        hm.resolve_model()


def test_models_dir_override(fake_variants, tmp_path, monkeypatch):
    whl, v = fake_variants
    monkeypatch.setenv(hm.MODELS_DIR_ENV, str(tmp_path / "image_models"))
    (dest,) = prov.provision(wheel=whl, log=lambda s: None)
    assert dest == tmp_path / "image_models" / "hand_landmarker.task"
    assert hm.resolve_model() == dest


def test_cli(fake_variants, tmp_path, capsys):
    whl, v = fake_variants
    dest = tmp_path / "cli" / "m.task"
    assert prov.main(["provision", "--dest", str(dest), "--wheel", str(whl)]) == 0
    assert prov.main(["verify", str(dest)]) == 0
    assert v.built_sha256 in capsys.readouterr().out
    assert prov.main(["verify", str(tmp_path / "none.task")]) == 1
    assert "provision" in capsys.readouterr().err
    # the runtime package verifies only
    assert hm.main([str(dest)]) == 0 and v.built_sha256 in capsys.readouterr().out
    assert hm.main([str(tmp_path / "none.task")]) == 1 and "make setup" in capsys.readouterr().err


def test_index_page_parsing_json_and_html():
    fn = hm.WHEEL_FILENAME
    js = '{"files": [{"filename": "%s", "url": "https://files.example/a/%s"}]}' % (fn, fn)
    assert prov._find_file_url(js, fn) == f"https://files.example/a/{fn}"
    html = (f'<html><body><a href="../../packages/x/{fn}#sha256=ab">{fn}</a>'
            '<a href="y.whl">y</a></body></html>')
    assert prov._find_file_url(html, fn) == f"../../packages/x/{fn}#sha256=ab"
    assert prov._find_file_url(html, "other.whl") is None


def test_real_wheel_builds_the_pinned_bundles(kit, tmp_path):
    wheel = kit.find_wheel()
    if wheel is None:
        pytest.skip(f"no {hm.WHEEL_FILENAME} in the wheel cache or /tmp/mpw to check the pinned build")
    for name, v in hm.VARIANTS.items():
        out = prov.build_bundle(wheel, tmp_path / v.filename, v.members)
        assert file_sha256(None, out) == v.built_sha256, name


@pytest.mark.parametrize("which", ["real_model", "real_model_lite"])
def test_real_model_loads_and_runs(which, request):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    path = request.getfixturevalue(which)
    assert hm.resolve_model(path) == path
    opts = vision.HandLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                        running_mode=vision.RunningMode.IMAGE, num_hands=2)
    with vision.HandLandmarker.create_from_options(opts) as lm:
        blank = np.full((240, 320, 3), 128, np.uint8)
        res = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=blank))
        assert res.hand_landmarks == []
