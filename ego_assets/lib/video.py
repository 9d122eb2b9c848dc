"""Video reading and writing with PyAV (shared by every stage that touches pixels)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
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


# The decoded frames of the last video read in this process are kept (as PyAV frames: their YUV planes, so
# an image converted from them is exactly the one a new decode gives) while they fit in this many MiB: the
# steps of one video run one after the other in one process, and each reads the same proxy (calibration,
# hands, odometry, the episodes' video, the previews), which is then decoded once. A 640 px proxy frame is
# 0.35 MB: about 70 s of proxy at 10 Hz; a longer one is decoded by each step, one frame in memory.
DECODE_CACHE_MIB = 256


@dataclass
class _Decoded:
    key: tuple
    frames: list = field(default_factory=list)  # (t_s, av.VideoFrame)
    nbytes: int = 0
    complete: bool = False


_cache_lock = threading.Lock()
_cache: _Decoded | None = None


def _file_key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # av.open names the file and the reason
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size, st.st_ino)


def iter_frames(path: str, start_index: int = 0, stop_index: int | None = None,
                fmt: str = "rgb24", cache: bool = True) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, t_s, image)`` for the frames of a proxy video (frame_index counts decoded
    frames from 0; ``image`` is HxWx3 uint8 RGB, or HxW for ``fmt='gray'``).

    A video whose frames fit in ``DECODE_CACHE_MIB`` is decoded once per process: its frames are kept
    (the last such video only) and later calls, any range or format, convert the kept frames. A call
    that stops early (``stop_index``, or the caller closes the generator) while the frames are being kept
    decodes the rest into the cache before returning. ``cache=False``: a read that keeps nothing (one of
    several concurrent readers of parts of the video; frames before ``start_index`` are decoded, not
    converted)."""
    global _cache
    key = _file_key(path)
    hit = _kept(key)
    if hit is not None:
        stop = len(hit.frames) if stop_index is None else min(stop_index, len(hit.frames))
        for i in range(start_index, stop):
            t, frame = hit.frames[i]
            yield i, t, frame.to_ndarray(format=fmt)
        return
    keep = _Decoded(key) if key is not None and cache else None
    budget = DECODE_CACHE_MIB * 2 ** 20
    done = False  # the caller has what it wants (its stop, or it closed this generator): the rest is
    # decoded only into the cache, for the next step
    with open_av(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else float("nan")
            if keep is not None:
                keep.nbytes += sum(p.buffer_size for p in frame.planes)
                if keep.nbytes > budget:
                    keep = None  # too long to keep: stream, one frame in memory
                else:
                    keep.frames.append((t, frame))
            done = done or (stop_index is not None and i >= stop_index)
            if done:
                if keep is None:
                    break
                continue
            if i >= start_index:
                try:
                    yield i, t, frame.to_ndarray(format=fmt)
                except GeneratorExit:  # e.g. next(iter_frames(p)) for the first frame
                    if keep is None:
                        raise
                    done = True
    if keep is not None:
        keep.complete = True
        with _cache_lock:
            _cache = keep


def _kept(key: tuple | None) -> _Decoded | None:
    """The kept frames of the file with ``key``, if they are the ones kept."""
    with _cache_lock:
        return _cache if key is not None and _cache is not None and _cache.complete and _cache.key == key else None


def is_cached(path: str) -> bool:
    """Whether ``path``'s frames are kept decoded in this process (reads of any range are then cheap)."""
    return _kept(_file_key(path)) is not None


def clear_decoded() -> None:
    """Drop the kept frames (the end of a video's run)."""
    global _cache
    with _cache_lock:
        _cache = None


def read_frames(path: str, indices: list[int] | None = None, fmt: str = "rgb24") -> dict[int, np.ndarray]:
    """Decode the frames with the given indices (all if None) into a dict index -> image."""
    wanted = None if indices is None else set(indices)
    stop = None if not wanted else max(wanted) + 1
    out = {}
    for i, _, img in iter_frames(path, 0, stop, fmt):
        if wanted is None or i in wanted:
            out[i] = img
    return out
