"""Clips: overlapping windows over the whole video, remuxed (stream copy, no re-encode) from the source."""

from __future__ import annotations

import math
import os
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


# Containers a clip may be remuxed into, in order of preference (format, extension). MP4 first (what
# most tools read); Matroska holds VP8, ProRes, FFV1, Theora, raw video; MOV holds DNxHD, QuickTime RLE.
CLIP_CONTAINERS = (("mp4", "mp4"), ("matroska", "mkv"), ("mov", "mov"))
REENCODE = ("libx264", "mp4")  # for a codec no container above can hold: clips are re-encoded


def _can_remux(src: str, fmt: str) -> bool:
    """Whether the first packets of ``src``'s video stream can be muxed into ``fmt`` (tried in memory:
    FFmpeg's list of a muxer's codecs is not what it accepts, e.g. MOV lists VP8 but refuses it)."""
    import io

    try:
        with open_av(src) as inp, open_av(io.BytesIO(), "w", format=fmt) as out:
            ins = inp.streams.video[0]
            ost = out.add_stream_from_template(ins)
            n = 0
            for pkt in inp.demux(ins):
                if pkt.pts is None or pkt.size == 0:
                    continue
                pkt.stream = ost
                out.mux(pkt)
                n += 1
                if n >= 3:
                    break
        return n > 0
    except Exception:  # noqa: BLE001 - any refusal means: not this container
        return False


def clip_extension(src: str) -> str:
    """The file extension of ``src``'s clips: the first container of :data:`CLIP_CONTAINERS` that
    holds its video stream without re-encoding, else that of the re-encoded clips."""
    from ego_assets.lib.probe import VideoError

    try:
        with open_av(src) as c:
            c.streams.video[0]
    except Exception as e:  # noqa: BLE001
        raise VideoError(src, f"cannot read the video stream to cut clips: {e}") from None
    for fmt, ext in CLIP_CONTAINERS:
        if _can_remux(src, fmt):
            return ext
    return REENCODE[1]


def _format_of(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return {e: f for f, e in CLIP_CONTAINERS}.get(ext, "mp4")


def remux_clips(src: str, index: PacketIndex, windows: list[tuple[float, float]],
                out_paths: list[str]) -> list[dict]:
    """Copy the packets of each window into its own file (container from the extension of its path,
    see :func:`clip_extension`), starting at the keyframe at or before the window start so that the
    clip decodes on its own. A codec the container cannot hold is re-encoded (H.264) instead. Returns
    per-clip dicts for the ``clips`` table. Errors name the source file and the reason."""
    import av

    from ego_assets.lib.probe import VideoError

    key_t = index.t_s[index.is_key]
    file_starts = []
    for start, _ in windows:
        before = key_t[key_t <= start + 1e-9]
        file_starts.append(float(before[-1]) if len(before) else 0.0)
    tb = index.time_base
    t0 = index.start_pts_s
    rows = [dict(clip_index=i, start_s=s, end_s=e, file_start_s=fs, n_frames=0)
            for i, ((s, e), fs) in enumerate(zip(windows, file_starts))]

    def inside(r, t):
        return r["file_start_s"] - 1e-9 <= t < r["end_s"] - 1e-9 or (
            r is rows[-1] and t >= r["file_start_s"] - 1e-9)

    try:
        with open_av(src) as inp:
            ins = inp.streams.video[0]
            fmts = {_format_of(p) for p in out_paths}
            if all(_can_remux(src, f) for f in fmts):
                _remux(inp, ins, rows, out_paths, tb, t0, inside)
            else:
                _reencode(inp, ins, rows, out_paths, t0, inside)
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        where = getattr(e, "filename", None) or (os.path.dirname(out_paths[0]) if out_paths else "?")
        raise VideoError(src, f"cannot cut clips into {where}: {getattr(e, 'strerror', None) or e}") from None
    return rows


def _remux(inp, ins, rows, out_paths, tb, t0, inside) -> None:
    outs = []
    try:
        for path in out_paths:
            o = open_av(path, "w", format=_format_of(path))
            outs.append((o, o.add_stream_from_template(ins)))
        for pkt in inp.demux(ins):
            if pkt.pts is None or pkt.size == 0:
                continue
            t = pkt.pts * tb - t0
            for r, (o, os_) in zip(rows, outs):
                if inside(r, t):
                    if t >= r["start_s"] - 1e-9:
                        r["n_frames"] += 1
                    pkt.stream = os_
                    o.mux(pkt)
    finally:
        for o, _ in outs:
            o.close()


def _reencode(inp, ins, rows, out_paths, t0, inside) -> None:
    """Decode once and encode each window's frames (H.264, near lossless, source timestamps)."""
    from fractions import Fraction

    ins.thread_type = "AUTO"
    outs = []
    try:
        for path in out_paths:
            o = open_av(path, "w", format=_format_of(path))
            st = o.add_stream(REENCODE[0], rate=ins.average_rate or Fraction(30))
            st.width, st.height, st.pix_fmt = ins.codec_context.width, ins.codec_context.height, "yuv420p"
            st.time_base = ins.time_base
            st.codec_context.time_base = ins.time_base
            st.options = {"preset": "ultrafast", "crf": "12"}
            outs.append((o, st))
        for frame in inp.decode(ins):
            if frame.pts is None:
                continue
            t = float(frame.pts * ins.time_base) - t0
            for r, (o, st) in zip(rows, outs):
                if inside(r, t):
                    if t >= r["start_s"] - 1e-9:
                        r["n_frames"] += 1
                    f = frame.reformat(format="yuv420p")
                    f.pts, f.time_base = frame.pts, ins.time_base
                    for pkt in st.encode(f):
                        o.mux(pkt)
        for o, st in outs:
            for pkt in st.encode(None):
                o.mux(pkt)
    finally:
        for o, _ in outs:
            o.close()


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
