"""Video reading and writing with PyAV (shared by every stage that touches pixels)."""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import numpy as np

# Proxy videos store presentation times in milliseconds, so t_s survives the round trip exactly.
PROXY_TIME_BASE = Fraction(1, 1000)


def open_av(*args, **kwargs):
    """``av.open`` with PyAV's Python log callback switched off.

    torchvision (imported by lerobot) turns that callback on; FFmpeg's frame threads then need the GIL to
    log, and closing a threaded decoder while one of them logs deadlocks the process. Every PyAV open in
    ego_assets goes through here."""
    import av

    if av.logging.get_level() is not None:
        av.logging.set_level(None)
    return av.open(*args, **kwargs)


def iter_frames(path: str, start_index: int = 0, stop_index: int | None = None,
                fmt: str = "rgb24") -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, t_s, image)`` for the frames of a proxy video (frame_index counts decoded
    frames from 0; ``image`` is HxWx3 uint8 RGB, or HxW for ``fmt='gray'``)."""
    with open_av(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i < start_index:
                continue
            if stop_index is not None and i >= stop_index:
                break
            t = float(frame.pts * frame.time_base) if frame.pts is not None else float("nan")
            yield i, t, frame.to_ndarray(format=fmt)


def read_frames(path: str, indices: list[int] | None = None, fmt: str = "rgb24") -> dict[int, np.ndarray]:
    """Decode the frames with the given indices (all if None) into a dict index -> image."""
    wanted = None if indices is None else set(indices)
    stop = None if not wanted else max(wanted) + 1
    out = {}
    for i, _, img in iter_frames(path, 0, stop, fmt):
        if wanted is None or i in wanted:
            out[i] = img
    return out
