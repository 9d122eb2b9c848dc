"""The geometry quality checks pass on good data and catch what they are for."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib import schemas
from ego_assets.lib.geometry import checks
from ego_assets.lib.geometry.odometry import pose_table


def _calib(**kw):
    row = dict(fx=320.0, fy=320.0, cx=319.5, cy=179.5, width=640, height=360, hfov_deg=90.0,
               distortion_model="none", method="prior:hfov90", rect_fx=320.0, rect_fy=320.0,
               rect_cx=319.5, rect_cy=179.5)
    row.update(kw)
    return row


def test_intrinsics_check():
    ok, v, _ = checks.check_intrinsics(_calib())
    assert ok and v == pytest.approx(90.0)
    assert not checks.check_intrinsics(_calib(fx=-5.0))[0]
    assert not checks.check_intrinsics(_calib(cx=700.0))[0]
    bad = checks.check_intrinsics(_calib(hfov_deg=175.0))
    assert not bad[0] and "hfov" in bad[2]
    assert not checks.check_intrinsics({"fx": 1.0})[0]


def _poses(n=30, step_deg=2.0, step_m=0.01, scale="metric", fps=10.0):
    R = Rotation.from_euler("y", np.arange(n)[:, None] * step_deg, degrees=True).as_matrix()
    c = np.arange(n)[:, None] * [step_m, 0, 0]
    return pose_table(np.arange(n), np.arange(n) / fps, R, c, np.ones(n, bool), scale)


def test_pose_tables_conform_to_the_schema():
    t = _poses()
    schemas.conform("camera_poses", t, "pk")  # raises on a column outside the contract


def test_jump_check_uses_time_and_scale():
    ok, v, _ = checks.check_pose_jumps(_poses())
    assert ok and v < 1
    # 10 deg in 0.1 s = 100 deg/s is fine; 90 deg in 0.1 s = 900 deg/s is not
    assert checks.check_pose_jumps(_poses(step_deg=10))[0]
    bad = checks.check_pose_jumps(_poses(step_deg=90))
    assert not bad[0] and bad[1] > 1 and "deg/s" in bad[2]
    # 0.5 m per 0.1 s = 5 m/s: a jump when metric, not judged when relative
    assert not checks.check_pose_jumps(_poses(step_m=0.5))[0]
    assert checks.check_pose_jumps(_poses(step_m=0.5, scale="relative"))[0]
    # the same step at 1 fps is slow enough
    assert checks.check_pose_jumps(_poses(step_m=0.5, fps=1.0))[0]


def test_tracked_fraction_and_rotation_checks():
    t = _poses()
    assert checks.check_tracked_fraction(t)[0]
    tr = np.ones(30, bool)
    tr[:10] = False
    R = np.tile(np.eye(3), (30, 1, 1))
    low = pose_table(np.arange(30), np.arange(30) / 10, R, np.zeros((30, 3)), tr, "relative")
    ok, v, _ = checks.check_tracked_fraction(low)
    assert not ok and v == pytest.approx(20 / 30)
    assert checks.check_rotations(t)[0]
    d = t.to_pydict()
    d["qw"][3] = d["qw"][3] * 1.1  # not a unit quaternion
    import pyarrow as pa

    ok, v, _ = checks.check_rotations(pa.table(d))
    assert not ok and v > 0.01
