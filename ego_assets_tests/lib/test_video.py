import os

import numpy as np

from ego_assets.lib import video
from ego_assets_tests.helpers import synth


def _decode_all(path, fmt, monkeypatch):
    """Every frame of ``path`` decoded afresh (no cache)."""
    monkeypatch.setattr(video, "DECODE_CACHE_MIB", 0)
    video.clear_decoded()
    out = [(i, t, img) for i, t, img in video.iter_frames(str(path), fmt=fmt)]
    monkeypatch.undo()
    return out


def _counting_open(monkeypatch):
    opened = []
    real = video.open_av

    def counting(*a, **kw):
        opened.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(video, "open_av", counting)
    return opened


def _same(a, b):
    return (len(a) == len(b) and all(i == j and t == u and np.array_equal(x, y)
                                      for (i, t, x), (j, u, y) in zip(a, b)))


def test_a_proxy_is_decoded_once_and_every_read_gives_the_decoded_images(tmp_path, monkeypatch):
    src = tmp_path / "v.mp4"
    synth.make_video(src, n_frames=30, fps=10, size=(160, 96))
    rgb = _decode_all(src, "rgb24", monkeypatch)
    gray = _decode_all(src, "gray", monkeypatch)
    assert len(rgb) == 30 and rgb[0][2].shape == (96, 160, 3) and gray[0][2].shape == (96, 160)
    video.clear_decoded()
    opened = _counting_open(monkeypatch)
    # the first frame only (a generator left after one frame), a partial read (as calibration does),
    # then full reads in both formats, a slice, read_frames
    gen = video.iter_frames(str(src))
    assert _same([next(gen)], rgb[:1])
    gen.close()
    assert _same(list(video.iter_frames(str(src), 0, 7, fmt="gray")), gray[:7])
    assert _same(list(video.iter_frames(str(src))), rgb)
    assert _same(list(video.iter_frames(str(src), fmt="gray")), gray)
    assert _same(list(video.iter_frames(str(src), 12, 20)), rgb[12:20])
    picked = video.read_frames(str(src), [3, 17])
    assert sorted(picked) == [3, 17] and np.array_equal(picked[17], rgb[17][2])
    assert opened == [str(src)]
    video.clear_decoded()


def test_a_rewritten_file_or_one_too_large_to_keep_is_decoded_again(tmp_path, monkeypatch):
    src = tmp_path / "v.mp4"
    synth.make_video(src, n_frames=12, fps=10, size=(160, 96))
    video.clear_decoded()
    first = list(video.iter_frames(str(src)))
    other = tmp_path / "w.mp4"
    synth.make_video(other, n_frames=20, fps=10, size=(160, 96), seed=3)
    os.replace(other, src)  # the same path, new content (a step rerun rewrites its proxy)
    opened = _counting_open(monkeypatch)
    again = list(video.iter_frames(str(src)))
    assert len(first) == 12 and len(again) == 20 and opened == [str(src)]
    monkeypatch.setattr(video, "DECODE_CACHE_MIB", 0.01)  # less than one frame: nothing kept
    video.clear_decoded()
    a = list(video.iter_frames(str(src), 0, 5))
    b = list(video.iter_frames(str(src), 0, 5))
    assert _same(a, b) and len(opened) == 3
    video.clear_decoded()
