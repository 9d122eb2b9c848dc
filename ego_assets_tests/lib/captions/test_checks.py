"""Checks on captions: coverage of the segments and the share of N/A answers."""

import pyarrow as pa

from ego_assets.lib.captions.checks import check_captions_cover_segments, check_na_share

SEG = pa.table({"segment_id": pa.array([0, 1, 2], pa.int32()), "hand": ["left", "right", "right"]})


def _caps(ids, hands, valid):
    return pa.table({"segment_id": pa.array(ids, pa.int32()), "hand": hands, "valid": valid})


def test_every_segment_has_one_caption():
    ok, value, detail = check_captions_cover_segments(SEG, _caps([0, 1, 2], ["left", "right", "right"],
                                                                 [True] * 3))
    assert ok and value == 0.0
    ok, value, detail = check_captions_cover_segments(SEG, _caps([0, 2], ["left", "right"], [True] * 2))
    assert not ok and value == 1.0 and "without a caption (e.g. [1])" in detail
    ok, _, detail = check_captions_cover_segments(SEG, _caps([0, 1, 2, 7], ["left", "right", "right", "left"],
                                                             [True] * 4))
    assert not ok and "unknown segments (e.g. [7])" in detail
    ok, _, detail = check_captions_cover_segments(SEG, _caps([0, 1, 1, 2], ["left", "right", "right", "right"],
                                                             [True] * 4))
    assert not ok and "duplicate" in detail
    ok, _, detail = check_captions_cover_segments(SEG, _caps([0, 1, 2], ["right", "right", "right"], [True] * 3))
    assert not ok and "hand differs" in detail
    empty = SEG.slice(0, 0)
    assert check_captions_cover_segments(empty, _caps([], [], []))[0]


def test_na_share():
    caps = _caps([0, 1, 2, 3], ["l"] * 4, [True, False, False, False])
    ok, value, detail = check_na_share(caps, warn_above=0.5)
    assert not ok and value == 0.75 and "3 of 4" in detail
    assert check_na_share(caps, warn_above=0.8)[0]
    assert check_na_share(_caps([], [], []))[0]
