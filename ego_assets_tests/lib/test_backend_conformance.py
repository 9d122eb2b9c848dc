"""The contract of every registered backend, built-in or plugged in (docs/architecture.md, "Backends").

Parametrised over the registry: the built-ins, the modules named in ``EGO_ASSETS_PLUGINS``, the
``ego_assets.backends`` entry points, and an example plug-in (``helpers/plugin_example.py``). Each runs
on the real clip (4 s of ``sample_data/egoloc_pour_water_rgb.mp4`` as a 10 fps proxy) with the other
stages' inputs made by the default backends, and its typed result must hold the stage's contract. Check
your own backend with ``EGO_ASSETS_PLUGINS=your.module pytest ego_assets_tests/lib/test_backend_conformance.py``.
GPU backends run on tiny random weights (``helpers/tiny_models.py``; marked slow: torch alone takes
tens of seconds to import); one whose package is not installed must say so with ``ModelUnavailableError``.
"""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from ego_assets.lib import backends, schemas
from ego_assets_tests.conftest import SAMPLE_CLIP
from ego_assets_tests.helpers import synth, tiny_models

EXAMPLE_PLUGIN = "ego_assets_tests.helpers.plugin_example"
PK = "conformance"


def _registered() -> list:
    """(stage, name) of every backend a user can select, leaving out the scenario backends that other
    test modules register for their own checks."""
    importlib.import_module(EXAMPLE_PLUGIN)
    allowed = {m for ms in backends.BUILTIN_MODULES.values() for m in ms} | set(backends.plugin_modules())
    allowed.add(EXAMPLE_PLUGIN)
    out = []
    for stage in backends.STAGES:
        for name in backends.available(stage):
            cls = backends.backend_class(stage, name)
            if cls.__module__.startswith("ego_assets_tests.") and cls.__module__ not in allowed:
                continue
            # a GPU backend loads torch and its model (tens of seconds on CPU): the slow layer
            marks = [pytest.mark.slow] if cls.resources.gpu > 0 else []
            out.append(pytest.param(stage, name, id=f"{stage}/{name}", marks=marks))
    return out



@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The real clip through the default backend of every stage: each stage's inputs."""
    d = tmp_path_factory.mktemp("conformance")
    proxy = str(d / "proxy.mp4")
    times = synth.real_proxy(SAMPLE_CLIP, proxy, start_s=2.5, dur_s=4.0, fps=10.0, long_side=640)
    frames = synth.frames_table(times)
    from ego_assets.lib.video import iter_frames

    h, w = next(iter_frames(proxy))[2].shape[:2]
    video = {"width": w, "height": h, "uri": proxy, "local_path": proxy}
    cal = backends.create("calibration", backends.DEFAULTS["calibration"]).calibrate(
        video, proxy, frames, (w, h), {})
    calib = schemas.conform("calibrations", cal.calibration, PK).to_pylist()[0]
    hands = backends.create("hands", backends.DEFAULTS["hands"]).track(proxy, frames, calib)
    hand_tracks = schemas.conform("hand_tracks", hands.tracks, PK)
    poses = backends.create("poses", backends.DEFAULTS["poses"]).estimate(proxy, frames, None, calib, hand_tracks)
    camera_poses = schemas.conform("camera_poses", poses.poses, PK)
    from ego_assets.lib.motion.segment import segment_by_wrist_speed
    from ego_assets.lib.motion.world import build_hand_world

    hand_world, segments = segment_by_wrist_speed(build_hand_world(hand_tracks, camera_poses, frames), frames)
    assert segments.num_rows > 0, "the clip's hands move: the default chain must find segments"
    return SimpleNamespace(dir=d, proxy=proxy, frames=frames, size=(w, h), video=video, calib=calib,
                           hand_tracks=hand_tracks, camera_poses=camera_poses, hand_world=hand_world,
                           segments=segments)


def _json_safe(stats: dict) -> None:
    assert isinstance(stats, dict)
    json.dumps(stats, allow_nan=False)  # NaN must be None: the stats go to the UI as JSON


def _make(stage: str, name: str, clip, monkeypatch):
    if (stage, name) == ("calibration", "depthpro"):
        monkeypatch.setenv("EGO_ASSETS_DEPTHPRO_MODEL", tiny_models.tiny_depthpro(clip.dir / "depthpro"))
        return backends.create(stage, name, device="cpu", depth_every=5)
    if (stage, name) == ("captions", "openai"):
        from ego_assets_tests.helpers.fake_vlm import FakeVLM

        vlm = FakeVLM()
        clip.closers.append(vlm.close)
        return backends.create(stage, name, base_url=vlm.url, model="test-vlm", api_key="k", concurrency=1,
                               cache_dir=str(clip.dir / "vlm-cache"), timeout_s=10.0)
    return backends.create(stage, name)


def check_calibration(b, clip) -> None:
    from ego_assets.lib.geometry.calibration_backends import CalibrationResult, ModelUnavailableError
    from ego_assets.lib.geometry.checks import check_intrinsics

    try:
        res = b.calibrate(clip.video, clip.proxy, clip.frames, clip.size, {})
    except ModelUnavailableError as e:  # a model backend whose package is not installed: a clear error
        assert b.resources.gpu > 0 and b.name in str(e), e
        return
    assert isinstance(res, CalibrationResult) and res.backend == b.name
    row = schemas.conform("calibrations", res.calibration, PK).to_pylist()[0]
    assert (row["width"], row["height"]) == clip.size
    assert check_intrinsics(row)[0], row
    if res.scene_depth is not None:
        fi = res.scene_depth.column("frame_index").to_numpy()
        assert set(fi) <= set(clip.frames.column("frame_index").to_pylist())
        t = clip.frames.column("t_s").to_numpy()
        np.testing.assert_allclose(res.scene_depth.column("t_s").to_numpy(), t[fi])


def check_hands(b, clip) -> None:
    from ego_assets.lib.hands.backends import (DETECTIONS_SCHEMA, TRACKS_SCHEMA, HandDetections, HandResult,
                                               HandsBackend)

    n = clip.frames.num_rows
    res = b.track(clip.proxy, clip.frames, clip.calib)
    assert isinstance(res, HandResult)
    assert res.tracks.schema.equals(TRACKS_SCHEMA) and res.detections.schema.equals(DETECTIONS_SCHEMA)
    assert res.tracks.num_rows > 0, "hands are in view in every frame of this clip"
    fi = res.tracks.column("frame_index").to_numpy()
    assert fi.min() >= 0 and fi.max() < n
    np.testing.assert_allclose(res.tracks.column("t_s").to_numpy(), clip.frames.column("t_s").to_numpy()[fi])
    assert set(res.tracks.column("hand").to_pylist()) <= {"left", "right"}
    keys = list(zip(fi.tolist(), res.tracks.column("hand").to_pylist()))
    assert len(set(keys)) == len(keys), "one row per frame and hand"
    J = np.asarray(res.tracks.column("joints_cam").to_pylist(), float).reshape(-1, 21, 3)
    assert np.isfinite(J).all() and (J[..., 2] > 0).all(), "joints in front of the camera"
    _json_safe(res.stats)
    if isinstance(b, HandsBackend):
        det = b.detect(clip.proxy, clip.frames, clip.calib)
        assert isinstance(det, HandDetections) and det.backend == b.name and det.n_frames == n
        assert det.image_size == clip.size


def check_poses(b, clip) -> None:
    res = b.estimate(clip.proxy, clip.frames, None, clip.calib, clip.hand_tracks)
    p = schemas.conform("camera_poses", res.poses, PK)
    assert p.column("frame_index").to_pylist() == clip.frames.column("frame_index").to_pylist()
    np.testing.assert_allclose(p.column("t_s").to_numpy(), clip.frames.column("t_s").to_numpy())
    tracked = np.asarray(p.column("tracked").to_pylist(), bool)
    assert tracked.any()
    q = np.stack([p.column(c).to_numpy() for c in ("qx", "qy", "qz", "qw")], 1)[tracked]
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    assert np.isfinite(np.stack([p.column(c).to_numpy() for c in ("tx", "ty", "tz")], 1)[tracked]).all()
    _json_safe(res.stats)


def check_captions(b, clip) -> None:
    from ego_assets.lib.captions.base import CaptionResult

    out = clip.dir / f"overlays_{b.name}"
    res = b.caption(clip.segments, clip.hand_world, clip.frames, clip.proxy, clip.calib, clip.camera_poses,
                    str(out))
    assert isinstance(res, CaptionResult) and res.backend == b.name
    t = schemas.conform("captions", res.captions, PK)
    want = sorted(zip(clip.segments.column("segment_id").to_pylist(), clip.segments.column("hand").to_pylist()))
    assert sorted(zip(t.column("segment_id").to_pylist(), t.column("hand").to_pylist())) == want
    assert set(t.column("captioner").to_pylist()) == {b.name}
    _json_safe(res.stats)


CHECKS = dict(calibration=check_calibration, hands=check_hands, poses=check_poses, captions=check_captions)


@pytest.mark.parametrize(("stage", "name"), _registered())
def test_backend_conforms(stage, name, clip, monkeypatch):
    clip.closers = []
    try:
        b = _make(stage, name, clip, monkeypatch)
        assert b.code_version() == f"{b.name}@{b.version}" or b.code_version().startswith(f"{b.name}@")
        assert b.resources.gpu >= 0 and b.resources.memory_gib > 0
        CHECKS[stage](b, clip)
    finally:
        for close in clip.closers:
            close()


def test_a_broken_result_names_the_backend_and_the_field():
    from ego_assets.lib.captions.base import CaptionResult, CaptionResultError
    from ego_assets.lib.geometry.calibration_backends import CalibrationResult, CalibrationResultError
    from ego_assets.lib.hands.backends import HandDetections, HandDetectionsError

    z = np.zeros
    good = dict(frame_index=[0], detection=[0], mp_label=["Left"], mp_score=[0.9], kp2d=z((1, 21, 2)),
                world=z((1, 21, 3)), joints_cam=z((1, 21, 3)) + 0.5, fit=["pnp"], reproj_px=[1.0],
                t_s=[0.0, 0.1], image_size=(64, 48), K=np.eye(3), undistorted=False,
                timing=dict(decode_s=0.0, landmarker_s=0.0, lifting_s=0.0))
    assert HandDetections("mine", **good).kp2d.dtype == np.float64
    with pytest.raises(HandDetectionsError, match=r"'mine'.*'kp2d'.*\(1, 21, 2\)"):
        HandDetections("mine", **{**good, "kp2d": z((1, 21, 3))})
    with pytest.raises(HandDetectionsError, match=r"'mine'.*'frame_index'.*0\.\.1"):
        HandDetections("mine", **{**good, "frame_index": [2]})
    with pytest.raises(HandDetectionsError, match=r"'mine'.*'joints_cam'.*non-finite"):
        HandDetections("mine", **{**good, "joints_cam": np.full((1, 21, 3), np.nan)})
    with pytest.raises(HandDetectionsError, match=r"'mine'.*'timing'"):
        HandDetections("mine", **{**good, "timing": {}})
    with pytest.raises(CalibrationResultError, match=r"'mine'.*'calibration'.*missing columns"):
        CalibrationResult("mine", pa.table({"fx": [1.0]}))
    row = schemas.empty("calibrations").drop(["partition_key"])
    with pytest.raises(CalibrationResultError, match=r"'mine'.*'calibration'.*one-row"):
        CalibrationResult("mine", row)
    with pytest.raises(CaptionResultError, match=r"'mine'.*'captions'.*missing columns"):
        CaptionResult("mine", pa.table({"segment_id": [1]}))


def test_a_module_named_in_ego_assets_plugins_registers_its_backend(tmp_path, monkeypatch):
    """The plug-in path a user takes: a module outside ego_assets, named in EGO_ASSETS_PLUGINS, becomes
    selectable (also after the stage's built-ins were loaded) by EGO_ASSETS_<STAGE>_BACKEND."""
    (tmp_path / "my_rig_plugin.py").write_text(
        "from ego_assets.lib.backends import Backend, register\n\n\n"
        "@register('calibration')\n"
        "class MyRig(Backend):\n"
        "    name, version = 'my_rig', '3'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backends.available("calibration")  # built-ins loaded first
    monkeypatch.setenv("EGO_ASSETS_PLUGINS", " my_rig_plugin , ")
    monkeypatch.setenv(backends.env_var("calibration"), "my_rig")
    try:
        assert "my_rig" in backends.available("calibration")
        cls = backends.backend_class("calibration")
        assert cls.__module__ == "my_rig_plugin" and cls.code_version() == "my_rig@3" and cls.stage == "calibration"
    finally:
        backends._REGISTRY["calibration"].pop("my_rig", None)
    monkeypatch.setenv("EGO_ASSETS_PLUGINS", "no_such_plugin_module")
    with pytest.raises(ModuleNotFoundError, match="EGO_ASSETS_PLUGINS names 'no_such_plugin_module'"):
        backends.available("calibration")
