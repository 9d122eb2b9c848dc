"""Checks on the ``captions`` table as pure functions returning ``(passed, value, detail)``.

Suggested severities: ``check_captions_cover_segments`` ERROR (an uncaptioned segment cannot become an
episode, and a caption without a segment is a stale leftover); ``check_na_share`` WARN (many N/A answers
point at a bad endpoint, a bad prompt or a video without manipulation - worth a look, not a stop).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib.motion.arrow import require, scalar


def check_captions_cover_segments(segments: pa.Table, captions: pa.Table) -> tuple[bool, float, str]:
    """Every segment has exactly one caption row (same hand), and no caption lacks a segment.
    value = number of segments without a caption."""
    require(segments, "segments", ["segment_id", "hand"])
    require(captions, "captions", ["segment_id", "hand"])
    seg = dict(zip(scalar(segments, "segment_id", np.int64).tolist(), segments.column("hand").to_pylist()))
    cap_ids = scalar(captions, "segment_id", np.int64).tolist() if captions.num_rows else []
    cap_hands = captions.column("hand").to_pylist()
    missing = sorted(set(seg) - set(cap_ids))
    orphans = sorted(set(cap_ids) - set(seg))
    dup = sorted({i for i in cap_ids if cap_ids.count(i) > 1}) if len(cap_ids) != len(set(cap_ids)) else []
    wrong_hand = sorted(i for i, h in zip(cap_ids, cap_hands) if i in seg and seg[i] != h)
    problems = []
    if missing:
        problems.append(f"{len(missing)} segment(s) without a caption (e.g. {missing[:5]})")
    if orphans:
        problems.append(f"{len(orphans)} caption(s) of unknown segments (e.g. {orphans[:5]})")
    if dup:
        problems.append(f"duplicate captions for segment(s) {dup[:5]}")
    if wrong_hand:
        problems.append(f"caption hand differs from the segment's for {wrong_hand[:5]}")
    if problems:
        return False, float(len(missing)), "; ".join(problems)
    return True, 0.0, f"{len(seg)} segment(s), each with one caption"


def check_na_share(captions: pa.Table, warn_above: float = 0.5) -> tuple[bool, float, str]:
    """Share of N/A (valid=False) captions; fails (a WARN) above ``warn_above``."""
    require(captions, "captions", ["valid"])
    n = captions.num_rows
    if n == 0:
        return True, 0.0, "no captions"
    valid = scalar(captions, "valid", bool, fill=False)
    share = float(1.0 - valid.mean())
    detail = f"{int((~valid).sum())} of {n} captions N/A ({share:.0%}; warn above {warn_above:.0%})"
    return share <= warn_above, share, detail
