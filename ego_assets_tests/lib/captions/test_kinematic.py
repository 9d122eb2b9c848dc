"""The offline kinematic captioner names the right hand, direction, distance and grasp change."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from ego_assets.lib import backends, schemas
from ego_assets.lib.captions.backends import KinematicCaptioner
from ego_assets.lib.captions.checks import check_captions_cover_segments, check_na_share
from ego_assets.lib.captions.kinematic import MOTIONS, KinematicParams, direction_words, instruction, vocabulary


def _run(scene, tmp_path, **kw):
    return KinematicCaptioner(**kw).caption(scene.segments, scene.hand_world, scene.tables.frames, scene.proxy,
                                            scene.calib, scene.tables.camera_poses, str(tmp_path / "overlays"))


def test_registered_as_default(monkeypatch):
    monkeypatch.delenv("EGO_ASSETS_CAPTIONS_BACKEND", raising=False)
    assert backends.backend_class("captions") is KinematicCaptioner
    assert "openai" in backends.available("captions")
    assert KinematicCaptioner.resources.gpu == 0


def test_captions_name_hand_direction_distance_grasp(scene, tmp_path):
    assert scene.segments.num_rows == 2  # one action per hand
    res = _run(scene, tmp_path)
    rows = {r["hand"]: r for r in res.captions.to_pylist()}
    right, left = rows["right"], rows["left"]
    # the camera looks along world +x: "forward" is camera +z, not world +z
    # the task: hand + motion in a closed vocabulary, no numbers; the numbers are in details
    assert right["instruction"] == "Move the right hand forward and close the grasp."
    assert left["instruction"] == "Move the left hand to the left and open the grasp."
    for r in (right, left):
        assert r["valid"] and r["captioner"] == "kinematic" and r["model"] == "kinematic-v2"
        assert "no vision model" in r["reasoning"]
        assert r["instruction"] in vocabulary() and not any(ch.isdigit() for ch in r["instruction"])
    assert "z forward +20.0 cm" in right["reasoning"] and "x right -15.0" in left["reasoning"]
    d = json.loads(right["details"])
    assert d["motion"] == "forward" and d["grasp"] == "close" and d["net_displacement_m"] == pytest.approx(0.2, abs=1e-3)
    assert d["displacement_cam_m"][2] == pytest.approx(0.2, abs=1e-3)
    assert json.loads(left["details"])["displacement_cam_m"][0] == pytest.approx(-0.15, abs=1e-3)
    assert res.stats["valid"] == 2 and res.stats["na"] == 0
    t = schemas.conform("captions", res.captions, "p")
    assert t.num_rows == 2
    assert check_captions_cover_segments(scene.segments, res.captions)[0]
    # the preview overlay is a real JPEG of the proxy's size
    import cv2

    img = cv2.imread(right["overlay_uri"])
    assert img is not None and img.shape[:2] == (120, 160)
    assert os.path.basename(right["overlay_uri"]).startswith(f"segment_{right['segment_id']:05d}_right")


def test_na_below_path_threshold_and_invalid_segments(scene, tmp_path):
    res = _run(scene, tmp_path, params=KinematicParams(min_path_length_m=0.18))
    rows = {r["hand"]: r for r in res.captions.to_pylist()}
    assert rows["left"]["instruction"] == "N/A" and not rows["left"]["valid"]  # 16 cm path < 18 cm
    assert "below 18 cm" in rows["left"]["reasoning"]
    assert rows["right"]["valid"]  # 20 cm
    assert check_na_share(res.captions, warn_above=0.4) == (False, 0.5, "1 of 2 captions N/A (50%; warn above 40%)")
    # a segment that failed the quality filter is not captioned
    seg = scene.segments
    i = seg.column_names.index("valid")
    bad = seg.set_column(i, "valid", pa.array([False, True]))
    bad = bad.set_column(bad.column_names.index("invalid_reason"), "invalid_reason",
                         pa.array(["blurry 4.0 < 15.0", None]))
    res2 = KinematicCaptioner().caption(bad, scene.hand_world, scene.tables.frames, None, None,
                                        scene.tables.camera_poses, None)
    r0 = res2.captions.to_pylist()[0]
    assert r0["instruction"] == "N/A" and "blurry" in r0["reasoning"] and r0["overlay_uri"] is None


@pytest.mark.parametrize("d, words", [
    ([0.0, 0.0, 0.1], "forward"),
    ([0.0, 0.0, -0.1], "back toward the camera"),
    ([0.0, -0.1, 0.02], "up"),
    ([0.0, 0.1, 0.0], "down"),
    ([0.06, 0.0, 0.1], "forward and to the right"),
    ([-0.1, 0.0, 0.03], "to the left"),
])
def test_direction_words(d, words):
    assert direction_words(np.array(d)) == words


def test_vocabulary_is_small_and_closed():
    v = vocabulary()
    assert len(v) == len(set(v)) == 2 * len(MOTIONS) * 3 == 42
    assert "Close the grasp of the left hand." in v and "Move the right hand up." in v
    assert not any(ch.isdigit() for t in v for ch in t)
    with pytest.raises(ValueError):
        instruction("left", "up and to the left", None)
