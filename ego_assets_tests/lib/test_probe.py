import pytest

from ego_assets.lib.probe import VideoError, probe_video
from ego_assets_tests.helpers import synth


def test_probe_constant_rate(tmp_path):
    p = tmp_path / "v.mp4"
    synth.make_video(p, n_frames=45, fps=30, size=(176, 98))
    row, idx = probe_video(str(p))
    assert row["n_frames"] == 45 and len(idx.t_s) == 45
    assert row["fps"] == pytest.approx(30, abs=0.01)
    assert row["duration_s"] == pytest.approx(1.5, abs=0.01)
    assert (row["width"], row["height"], row["codec"]) == (176, 98, "h264")
    assert not row["is_vfr"] and row["rotation_deg"] == 0


def test_probe_variable_rate_uses_real_timestamps(tmp_path):
    p = tmp_path / "vfr.mp4"
    times = synth.make_video(p, n_frames=20, fps=20, vfr=True)
    row, idx = probe_video(str(p))
    assert row["is_vfr"]
    assert idx.t_s == pytest.approx(times, abs=1e-3)
    # 10 intervals of 1/20 and 9 of 2/20 -> 1.40 s to the last frame
    assert idx.t_s[-1] == pytest.approx(1.40, abs=1e-3)


@pytest.mark.parametrize("rot", [90, 180, 270])
def test_probe_rotation(tmp_path, rot):
    p = tmp_path / "r.mp4"
    synth.make_video(p, n_frames=10, size=(160, 96), rotation=rot)
    row, _ = probe_video(str(p))
    assert row["rotation_deg"] == rot
    assert (row["display_width"], row["display_height"]) == ((96, 160) if rot != 180 else (160, 96))


@pytest.mark.parametrize("kind,reason", [
    ("zero_byte", "empty file"), ("text", "not a video container"), ("truncated", "truncated"),
    ("audio_only", "no video stream"), ("single_frame", "1 frame"),
])
def test_bad_inputs_raise_clear_errors(tmp_path, kind, reason):
    bad = synth.make_bad_files(tmp_path)
    with pytest.raises(VideoError) as e:
        probe_video(str(bad[kind]))
    assert str(bad[kind]) in str(e.value) and reason in str(e.value)
