"""Clips: overlapping windows over the whole video, remuxed (stream copy, no re-encode) from the source."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ego_assets.lib.probe import PacketIndex
from ego_assets.lib.video import open_av


@dataclass(frozen=True)
class ClipParams:
    window_s: float = 20.0
    overlap_s: float = 2.0

    def __post_init__(self):
        if not (self.window_s > 0 and 0 <= self.overlap_s < self.window_s):
            raise ValueError(f"clip window {self.window_s}s with overlap {self.overlap_s}s: need "
                             "window > 0 and 0 <= overlap < window")


def plan_windows(duration_s: float, p: ClipParams = ClipParams()) -> list[tuple[float, float]]:
    """Windows [start, end) that cover [0, duration] with ``overlap_s`` between neighbours; the last
    window ends exactly at ``duration_s``. A last window shorter than the overlap is merged into the
    previous one (it would add nothing the overlap does not have)."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    step = p.window_s - p.overlap_s
    n = max(1, math.ceil((duration_s - p.overlap_s) / step - 1e-9))
    out = []
    for i in range(n):
        start = i * step
        out.append((start, min(start + p.window_s, duration_s)))
    out[-1] = (out[-1][0], duration_s)
    return out


def remux_clips(src: str, index: PacketIndex, windows: list[tuple[float, float]],
                out_paths: list[str]) -> list[dict]:
    """Copy the packets of each window into its own MP4, starting at the keyframe at or before the
    window start so that the clip decodes on its own. Returns per-clip dicts for the ``clips`` table."""
    key_t = index.t_s[index.is_key]
    file_starts = []
    for start, _ in windows:
        before = key_t[key_t <= start + 1e-9]
        file_starts.append(float(before[-1]) if len(before) else 0.0)
    tb = index.time_base
    t0 = index.start_pts_s
    rows = [dict(clip_index=i, start_s=s, end_s=e, file_start_s=fs, n_frames=0)
            for i, ((s, e), fs) in enumerate(zip(windows, file_starts))]
    with open_av(src) as inp:
        ins = inp.streams.video[0]
        outs = []
        for path in out_paths:
            o = open_av(path, "w", format="mp4")
            outs.append((o, o.add_stream_from_template(ins)))
        try:
            for pkt in inp.demux(ins):
                if pkt.pts is None or pkt.size == 0:
                    continue
                t = pkt.pts * tb - t0
                for r, (o, os_) in zip(rows, outs):
                    if r["file_start_s"] - 1e-9 <= t < r["end_s"] - 1e-9 or (
                            r is rows[-1] and t >= r["file_start_s"] - 1e-9):
                        if t >= r["start_s"] - 1e-9:
                            r["n_frames"] += 1
                        pkt.stream = os_
                        o.mux(pkt)
        finally:
            for o, _ in outs:
                o.close()
    return rows


def coverage_gaps(rows: list[dict], duration_s: float, tol: float = 1e-6) -> list[tuple[float, float]]:
    """Parts of [0, duration] that no clip covers (empty when the clips are right)."""
    gaps, reach = [], 0.0
    for s, e in sorted((r["start_s"], r["end_s"]) for r in rows):
        if s > reach + tol:
            gaps.append((reach, s))
        reach = max(reach, e)
    if reach < duration_s - tol:
        gaps.append((reach, duration_s))
    return gaps


def frames_in(t_s: np.ndarray, start_s: float, end_s: float, last: bool) -> np.ndarray:
    """Mask of sampled frame times inside a clip window (the last window includes its end)."""
    return (t_s >= start_s) & ((t_s <= end_s) if last else (t_s < end_s))
