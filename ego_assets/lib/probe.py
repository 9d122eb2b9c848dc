"""Probing source videos (the ``videos`` table) with PyAV, and the errors bad input gets."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ego_assets.lib.video import open_av


class VideoError(ValueError):
    """A file that cannot be used as a source video. The message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


MIN_FRAMES = 2


@dataclass
class PacketIndex:
    """Presentation times (seconds from the first frame) and keyframe flags of the video packets."""

    t_s: np.ndarray
    is_key: np.ndarray
    start_pts_s: float
    time_base: float


def _open(path: str):
    import av

    if os.path.exists(path) and os.path.getsize(path) == 0:
        raise VideoError(path, "empty file (0 bytes)")
    try:
        container = open_av(path)
    except av.error.InvalidDataError as e:
        raise VideoError(path, f"not a video container PyAV/FFmpeg can read ({e.strerror or e})") from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(path, f"cannot open: {getattr(e, 'strerror', None) or e}") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(path, f"no video stream (streams: {', '.join(kinds)}; an audio-only file?)")
    return container


def index_packets(path: str) -> PacketIndex:
    """Demux (no decoding) the video stream: every packet's presentation time and keyframe flag.
    Detects truncation: a packet whose bytes lie past the end of the file."""
    import av

    size = os.path.getsize(path)
    pts, keys = [], []
    with _open(path) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        try:
            for p in c.demux(s):
                if p.size == 0 or p.pts is None:
                    continue
                if p.pos is not None and p.pos >= 0 and p.pos + p.size > size:
                    raise VideoError(path, f"truncated: a frame at byte {p.pos} ends past the end of the "
                                           f"file ({size} bytes)")
                pts.append(p.pts)
                keys.append(p.is_keyframe)
        except av.error.FFmpegError as e:
            raise VideoError(path, f"damaged stream while demuxing: {e.strerror or e}") from None
        declared = s.frames or 0  # the container's own sample count (MP4/MOV index)
        if declared and len(pts) < declared:
            raise VideoError(path, f"truncated: the container indexes {declared} frames but only "
                                   f"{len(pts)} are present in the file ({size} bytes)")
    if not pts:
        raise VideoError(path, "the video stream has no frames")
    order = np.argsort(pts, kind="stable")
    p = np.asarray(pts, dtype=np.int64)[order]
    k = np.asarray(keys, dtype=bool)[order]
    return PacketIndex(t_s=(p - p[0]) * tb, is_key=k, start_pts_s=p[0] * tb, time_base=tb)


def _rotation(stream, first_frame) -> int:
    rot = getattr(first_frame, "rotation", 0) or 0
    if not rot:
        try:
            rot = int(float(stream.metadata.get("rotate", 0)))
        except ValueError:
            rot = 0
    # FFmpeg reports the display matrix angle counter-clockwise; store the clockwise rotation to apply
    # for upright display, normalised to 0/90/180/270.
    return int(round(-rot / 90.0)) * 90 % 360


def probe_video(path: str) -> tuple[dict, PacketIndex]:
    """The ``videos`` row (without source/uri/sha256/partition_key) and the packet index.

    Raises :class:`VideoError` for anything unusable: empty, not a video, no video stream, truncated,
    undecodable, a single frame."""
    import av

    idx = index_packets(path)
    n = len(idx.t_s)
    with _open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        try:
            first = next(c.decode(s), None)
        except av.error.FFmpegError as e:
            raise VideoError(path, f"cannot decode the first frame: {e.strerror or e}") from None
        if first is None:
            raise VideoError(path, "no decodable frame")
        codec = s.codec_context.name
        width, height = s.codec_context.width or first.width, s.codec_context.height or first.height
        rotation = _rotation(s, first)
        avg = float(s.average_rate) if s.average_rate else 0.0
    if n < MIN_FRAMES:
        raise VideoError(path, f"has {n} frame(s); at least {MIN_FRAMES} are needed to sample a clip")
    dt = np.diff(idx.t_s)
    if np.any(dt <= 0):
        raise VideoError(path, "duplicate presentation timestamps in the video stream")
    last_dt = float(np.median(dt))
    duration = float(idx.t_s[-1] + last_dt)
    is_vfr = bool(dt.max() > 1.5 * dt.min() and (dt.max() - dt.min()) > 2e-3)
    # Constant rate: the container's rate is exact; variable rate: the mean rate over the video.
    fps = avg if (avg > 0 and not is_vfr) else (n - 1) / float(idx.t_s[-1])
    swap = rotation in (90, 270)
    row = dict(
        size_bytes=os.path.getsize(path), duration_s=duration, fps=fps, n_frames=n, width=width,
        height=height, codec=codec, rotation_deg=rotation,
        display_width=height if swap else width, display_height=width if swap else height,
        is_vfr=is_vfr, start_s=float(idx.start_pts_s),
    )
    return row, idx
