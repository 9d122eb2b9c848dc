"""The contract of ``PoseResult``: checked on construction, the error names the backend and the field."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.transform import Rotation

from ego_assets.lib.geometry.odometry import PoseResult, PoseResultError, pose_table


def _poses(n=5, tracked=None):
    R = Rotation.from_euler("y", np.linspace(0, 30, n)[:, None], degrees=True).as_matrix()
    c = np.column_stack([np.linspace(0, 1, n), np.zeros(n), np.zeros(n)])
    tr = np.ones(n, bool) if tracked is None else tracked
    return pose_table(np.arange(n), np.arange(n) / 10.0, R, c, tr, "relative")


def _frames(n=5):
    return pa.table({"frame_index": pa.array(np.arange(n), pa.int32()), "t_s": np.arange(n) / 10.0})


def _replace(t: pa.Table, name: str, values) -> pa.Table:
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def test_a_good_result_is_kept_and_frozen():
    res = PoseResult(_poses(tracked=np.array([1, 1, 0, 1, 1], bool)), {"n": 5}, "vo", frames=_frames())
    assert res.poses.num_rows == 5 and res.backend == "vo"
    assert np.isnan(res.poses.column("qw").to_numpy()[2])  # untracked rows carry NaN
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.backend = "other"


@pytest.mark.parametrize("bad, field", [
    (lambda t: t.append_column("partition_key", pa.array(["k"] * t.num_rows)), "'poses'"),
    (lambda t: t.drop(["n_inliers"]), "'poses'"),
    (lambda t: _replace(t, "qw", [2.0, 1, 1, 1, 1]), "'poses.q'"),
    (lambda t: _replace(t, "tx", [0.0, np.nan, 0, 0, 0]), "'poses.t'"),
    (lambda t: _replace(t, "frame_index", [0, 2, 1, 3, 4]), "'poses.frame_index'"),
    (lambda t: _replace(t, "t_s", [0.0, 0.1, 0.1, 0.3, 0.4]), "'poses.t_s'"),
])
def test_a_broken_contract_names_the_backend_and_the_field(bad, field):
    with pytest.raises(PoseResultError, match=rf"'megasam'.*{field}"):
        PoseResult(bad(_poses()), {}, "megasam")


def test_one_row_per_frame_of_the_frames_table():
    with pytest.raises(PoseResultError, match=r"'poses.frame_index'.*4 rows for the 5 frames"):
        PoseResult(_poses(4), {}, "vo", frames=_frames(5))
    shifted = _frames(5).set_column(1, "t_s", pa.array(np.arange(5) / 10.0 + 0.05))
    with pytest.raises(PoseResultError, match=r"'poses.t_s'"):
        PoseResult(_poses(5), {}, "vo", frames=shifted)


def test_stats_must_be_a_dict():
    with pytest.raises(PoseResultError, match=r"'stats'"):
        PoseResult(_poses(), [("n", 5)], "vo")
