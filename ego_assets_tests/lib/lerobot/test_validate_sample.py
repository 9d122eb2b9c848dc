"""Which episodes the dataset's validation decodes: both ends of every video file, bounded."""

import pyarrow as pa

from ego_assets.lib.lerobot.validate import decode_sample

K = "observation.images.ego"


def _meta(files: list[int]) -> pa.Table:
    """One row per episode, in episode order; ``files[e]`` is episode e's video file index."""
    return pa.table({"episode_index": list(range(len(files))),
                     f"videos/{K}/chunk_index": [0] * len(files), f"videos/{K}/file_index": files})


def test_both_ends_of_every_file():
    meta = _meta([0, 0, 0, 1, 2, 2, 2, 2])
    assert decode_sample(meta, [K], None) == [0, 2, 3, 4, 7]
    assert decode_sample(meta, [K], 64) == [0, 2, 3, 4, 7]


def test_bounded_by_files_spread_over_the_dataset():
    meta = _meta([f for f in range(10) for _ in range(3)])  # 10 files of 3 episodes
    got = decode_sample(meta, [K], 6)  # 3 files, spread: the first, a middle one, the last
    assert len(got) == 6
    assert got[:2] == [0, 2] and got[-2:] == [27, 29]
    files = {e // 3 for e in got}
    assert len(files) == 3 and all(e % 3 in (0, 2) for e in got)


def test_without_video_evenly_spread():
    meta = pa.table({"episode_index": list(range(10))})
    assert decode_sample(meta, [], 3) == [0, 4, 9] or decode_sample(meta, [], 3) == [0, 5, 9]
    assert decode_sample(meta, [], None) == list(range(10))
