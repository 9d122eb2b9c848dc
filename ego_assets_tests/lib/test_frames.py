import os
from fractions import Fraction

import numpy as np
import pytest

from ego_assets.lib import frames
from ego_assets.lib.probe import probe_video
from ego_assets.lib.video import iter_frames
from ego_assets_tests.helpers import synth


def _sample(tmp_path, src, **kw):
    row, idx = probe_video(str(src))
    out = tmp_path / "proxy.mp4"
    cols, stats = frames.sample_frames(str(src), str(out), row["width"], row["height"],
                                       row["rotation_deg"], frames.FrameParams(**kw))
    return row, idx, cols, stats, out


def test_constant_rate_sampling_and_proxy(tmp_path):
    src = tmp_path / "v.mp4"
    synth.make_video(src, n_frames=60, fps=30, size=(320, 180))
    row, idx, cols, stats, proxy = _sample(tmp_path, src, rate_hz=10, long_side=160)
    assert len(cols["t_s"]) == 20 == frames.expected_count(row["duration_s"], row["n_frames"], 10)
    assert np.allclose(np.diff(cols["t_s"]), 0.1, atol=2e-3)
    # the proxy keeps size, count and the exact presentation times
    dec = list(iter_frames(str(proxy)))
    assert len(dec) == 20 and dec[0][2].shape == (90, 160, 3)
    assert [t for _, t, _ in dec] == pytest.approx(cols["t_s"], abs=1e-3)
    assert frames.count_frames(str(proxy)) == 20
    assert all(m > 0.005 for m in cols["motion"][1:]) and cols["motion"][0] == 0.0
    assert all(0 < b < 1 for b in cols["brightness"])


def test_vfr_times_are_real_presentation_times(tmp_path):
    src = tmp_path / "vfr.mp4"
    times = synth.make_video(src, n_frames=40, fps=20, vfr=True)
    _, _, cols, _, _ = _sample(tmp_path, src, rate_hz=10)
    # every sampled time is a real frame time, and the first at or after each 0.1 s tick
    assert set(np.round(cols["t_s"], 3)) <= set(np.round(times, 3))
    for t in np.arange(0, times[-1], 0.1):
        first = min(x for x in times if x >= t - 1e-6)
        assert round(first, 3) in set(np.round(cols["t_s"], 3))
    assert np.all(np.diff(cols["t_s"]) > 0)


def test_rotated_source_gives_upright_proxy(tmp_path):
    src = tmp_path / "rot.mp4"
    synth.make_video(src, n_frames=10, size=(160, 96), rotation=90)
    row, _, cols, stats, proxy = _sample(tmp_path, src)
    assert (stats["proxy_width"], stats["proxy_height"]) == (96, 160)
    img = next(iter_frames(str(proxy)))[2]
    assert img.shape == (160, 96, 3)
    # the first frame of the source, turned clockwise, matches the proxy's first frame
    base = synth.frame_at(0, 96, 160, synth.texture(96, 160, 0))
    turned = np.rot90(base, k=-1)
    assert np.abs(img.astype(int) - turned.astype(int)).mean() < 12
    assert np.abs(img.astype(int) - np.rot90(base, k=1).astype(int)).mean() > 20


def test_odd_size_source(tmp_path):
    src = tmp_path / "odd.mp4"
    synth.make_video(src, n_frames=12, size=(322, 182))
    _, _, cols, stats, proxy = _sample(tmp_path, src, long_side=161)
    assert stats["proxy_width"] % 2 == 0 and stats["proxy_height"] % 2 == 0
    assert frames.count_frames(str(proxy)) == len(cols["t_s"])


def test_static_video_has_no_motion_and_blur_is_measured(tmp_path):
    a = tmp_path / "static.mp4"
    synth.make_video(a, n_frames=20, static=True)
    _, _, cols, _, _ = _sample(tmp_path, a)
    assert max(cols["motion"]) < 0.003
    assert min(cols["blur"]) > 0


def test_proxy_size_never_upscales():
    assert frames.proxy_size(320, 240, 0, 640) == (320, 240)
    assert frames.proxy_size(1920, 1080, 0, 640) == (640, 360)
    assert frames.proxy_size(1920, 1080, 90, 640) == (360, 640)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to fill the disk")
def test_a_full_disk_names_the_proxy_not_a_decoding_failure(tmp_path):
    """Issue 16 item 8: a full disk while writing must say so and name the file written, not blame the
    source's decoding. /dev/full answers every write with ENOSPC."""
    from ego_assets.lib.probe import VideoError

    src = tmp_path / "v.mp4"
    synth.make_video(src, n_frames=40, fps=20)
    with pytest.raises(VideoError) as e:
        frames.sample_frames(str(src), "/dev/full", 160, 120, 0)
    assert e.value.path == "/dev/full" and "No space left on device" in str(e.value)
    assert str(src) in str(e.value) and "decoding" not in str(e.value)


def _bframe_video(path, n_frames: int, fps: int, size=(320, 180), pyramid: bool = True) -> None:
    """An H.264 stream with B-frames (x264 `veryfast`: up to 3 in a row, the middle one a reference),
    as cameras and most encoders write it; the synth helper writes none. ``pyramid=False``: always three
    B-frames in a row, none of them a reference."""
    tex = synth.texture(size[1], size[0], 0)
    opts = {"preset": "veryfast", "bf": "3"}
    if not pyramid:
        opts["x264-params"] = "b-pyramid=none:b-adapt=0"
    synth.write_frames(path, (synth.frame_at(i, size[1], size[0], tex) for i in range(n_frames)), fps=fps,
                       size=size, codec_options=opts, time_base=Fraction(1, fps))


def _all_times(path) -> list[float]:
    return [t for _, t, _ in iter_frames(str(path), fmt="gray")]


def _same_as_full_decode(tmp_path, src, **kw):
    """Sample ``src`` with unsampled frames skipped and with every frame decoded; assert both give the
    same columns and bit-identical proxies. Returns the skipping run's stats."""
    row, _, cols, stats, proxy = _sample(tmp_path, src, **kw)
    full_proxy = tmp_path / "full.mp4"
    full, full_stats = frames.sample_frames(str(src), str(full_proxy), row["width"], row["height"],
                                            row["rotation_deg"], frames.FrameParams(**kw, skip_unsampled=False))
    assert full_stats["n_skipped"] == 0
    assert cols == full  # the same frames, times, blur, brightness, motion and keyframe flags
    a = [img for _, _, img in iter_frames(str(proxy))]
    b = [img for _, _, img in iter_frames(str(full_proxy))]
    assert len(a) == len(b) == len(cols["t_s"]) and all(np.array_equal(x, y) for x, y in zip(a, b))
    return row, cols, stats


def test_unsampled_nonreference_frames_are_not_decoded(tmp_path):
    src = tmp_path / "b.mp4"
    _bframe_video(src, n_frames=90, fps=30)
    row, cols, stats = _same_as_full_decode(tmp_path, src, rate_hz=10, long_side=160)
    # one frame in three is kept; x264's non-reference B-frames that are not kept were left out
    assert len(cols["t_s"]) == frames.expected_count(row["duration_s"], row["n_frames"], 10) == 30
    assert stats["n_skipped"] >= 10 and stats["n_decoded"] + stats["n_skipped"] == 90


def test_runs_of_nonreference_frames_keep_the_sampled_ones(tmp_path):
    # three non-reference B-frames in a row at 30 fps: some of them are the first of their 0.1 s period,
    # so those are decoded and the others skipped
    src = tmp_path / "b.mp4"
    _bframe_video(src, n_frames=90, fps=30, pyramid=False)
    _, cols, stats = _same_as_full_decode(tmp_path, src, rate_hz=10, long_side=160)
    assert len(cols["t_s"]) == 30 and stats["n_skipped"] >= 20
    assert np.allclose(np.diff(cols["t_s"]), 0.1, atol=2e-3)


def test_few_frames_per_tick_and_variable_rates_match_a_full_decode(tmp_path):
    src = tmp_path / "b.mp4"
    _bframe_video(src, n_frames=24, fps=12)  # 1.2 frames per 0.1 s period
    _, cols, stats = _same_as_full_decode(tmp_path, src, rate_hz=10, long_side=160)
    assert len(cols["t_s"]) == 20
    vfr = tmp_path / "vfr.mp4"
    synth.make_video(vfr, n_frames=40, fps=20, vfr=True)
    _same_as_full_decode(tmp_path, vfr, rate_hz=10)


def test_a_plan_that_misses_a_sampled_frame_decodes_again_in_full(tmp_path, monkeypatch):
    src = tmp_path / "b.mp4"
    _bframe_video(src, n_frames=90, fps=30, pyramid=False)
    calls = []

    def wrong(self, container, stream):  # every packet after the first skippable: kept B-frames go
        calls.append(1)
        for i, pkt in enumerate(container.demux(stream)):
            if pkt.pts is not None and not pkt.is_discard:
                self.pts.append(pkt.pts)
                self.t0 = min(self.pts) if self.t0 is None else self.t0
            self.n_marked += i > 0
            yield pkt, i > 0

    monkeypatch.setattr(frames._SkipPlan, "packets", wrong)
    _, cols, stats = _same_as_full_decode(tmp_path, src, rate_hz=10, long_side=160)
    assert calls == [1] and stats["n_skipped"] == 0 and len(cols["t_s"]) == 30


@pytest.mark.parametrize("codec, opts, rotation", [
    ("libx265", {"preset": "veryfast", "x265-params": "bframes=4:log-level=error"}, 0),  # HEVC, B-frames
    ("mpeg4", {"bf": "2", "qscale": "4"}, 0),  # MPEG-4 part 2: no B-frame is a reference
    ("libx264", {"preset": "veryfast", "bf": "3"}, 90),  # a phone's portrait video
])
def test_other_codecs_and_rotations_match_a_full_decode(tmp_path, codec, opts, rotation):
    size = (320, 180)
    tex = synth.texture(size[1], size[0], 0)
    src = tmp_path / "v.mp4"
    synth.write_frames(src, (synth.frame_at(i, size[1], size[0], tex) for i in range(90)), fps=30, size=size,
                       codec=codec, codec_options=opts, rotation=rotation, time_base=Fraction(1, 30))
    row, cols, stats = _same_as_full_decode(tmp_path, src, rate_hz=10, long_side=160)
    assert len(cols["t_s"]) == 30 and stats["n_skipped"] >= 20
    assert (row["rotation_deg"] == 90) == (rotation == 90)
