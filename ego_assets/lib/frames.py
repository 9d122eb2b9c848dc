"""Frame sampling at the dataset rate into a compact proxy video, with per-frame quality measures.

Later stages decode the proxy (small, constant size, upright) instead of the source. The proxy keeps the
real presentation time of every sampled frame as its pts (milliseconds), so ``t_s`` survives exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from ego_assets.lib.probe import VideoError
from ego_assets.lib.video import PROXY_TIME_BASE, open_av


@dataclass(frozen=True)
class FrameParams:
    rate_hz: float = 10.0
    long_side: int = 640
    crf: int = 23
    preset: str = "ultrafast"  # the proxy is an intermediate: speed over bytes (see benchmarks/frames.py)
    gop_s: float = 1.0  # a proxy keyframe every second, for cheap seeking by later stages
    # Frames no other frame refers to (most B-frames) are not decoded when the source has at least this
    # many frames per sampling period: a sampled tick then takes the first reference frame at or after
    # it (up to two source frames late). If a whole period passes with no decoded frame, the file is
    # decoded again in full. Off by default (inf): it saves ~40 % of the decode's CPU on x264 B-frame
    # sources, but the hands measured on such frames were worse on two real clips (raw bone-length CV
    # 0.149 -> 0.200 and 0.078 -> 0.124, detection rate 0.987 -> 0.960 on one): 3.0 turns it on.
    skip_nonref_min_ratio: float = float("inf")

    def __post_init__(self):
        if self.rate_hz <= 0 or self.long_side < 16:
            raise ValueError(f"bad frame parameters: rate {self.rate_hz} Hz, long side {self.long_side} px")


def proxy_size(width: int, height: int, rotation_deg: int, long_side: int) -> tuple[int, int]:
    """(w, h) of the upright proxy: long side ``long_side`` (never upscaled), even dimensions."""
    w, h = (height, width) if rotation_deg in (90, 270) else (width, height)
    scale = min(1.0, long_side / max(w, h))
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


def expected_count(duration_s: float, n_source: int, rate_hz: float) -> int:
    return min(n_source, int(np.floor(duration_s * rate_hz - 1e-9)) + 1)


def _rotate(img: np.ndarray, rotation_deg: int) -> np.ndarray:
    # rotation_deg is clockwise; np.rot90 turns counter-clockwise for positive k
    return np.ascontiguousarray(np.rot90(img, k=-(rotation_deg // 90)))


class _MissedTick(Exception):
    """Skipping non-reference frames left a sampling period without a frame: decode in full."""


def sample_frames(src: str, proxy_path: str, width: int, height: int, rotation_deg: int,
                  p: FrameParams = FrameParams(),
                  progress: Callable[[int, int], None] | None = None,
                  n_source: int | None = None) -> tuple[dict, dict]:
    """Decode ``src``, keep the first frame at or after each tick of the ``rate_hz`` grid, write them to
    ``proxy_path`` (H.264) and measure blur (variance of the Laplacian), brightness (mean luma in
    [0, 1]) and motion (mean absolute luma change from the previous sampled frame, in [0, 1]).

    With ``p.skip_nonref_min_ratio`` set, a source with that many frames per tick is decoded without
    its non-reference frames (FFmpeg's ``skip_frame = NONREF``: nothing refers to them, so the others
    decode the same), about half the decoding of a B-frame stream; each tick then takes the first
    reference frame at or after it. When that leaves a whole period without a frame, the file is
    decoded again with every frame.

    Returns (columns of the ``frames`` table, stats)."""
    try:
        return _sample(src, proxy_path, width, height, rotation_deg, p, progress, n_source, skip_nonref=True)
    except _MissedTick:
        return _sample(src, proxy_path, width, height, rotation_deg, p, progress, n_source, skip_nonref=False)


def _sample(src, proxy_path, width, height, rotation_deg, p, progress, n_source, skip_nonref: bool):
    import av
    import cv2

    pw, ph = proxy_size(width, height, rotation_deg, p.long_side)
    # resize before rotating: the pre-rotation size of the proxy
    rw, rh = (ph, pw) if rotation_deg in (90, 270) else (pw, ph)
    period = 1.0 / p.rate_hz
    cols: dict[str, list] = {k: [] for k in ("frame_index", "t_s", "is_keyframe", "blur", "brightness",
                                             "motion")}
    t_start = time.perf_counter()
    n_decoded = 0
    prev_small = None
    next_tick = 0
    last_t = -np.inf
    with open_av(src) as inp, open_av(proxy_path, "w", format="mp4") as out:
        ins = inp.streams.video[0]
        ins.thread_type = "AUTO"
        fps = float(ins.average_rate or ins.guessed_rate or 0)
        skipping = skip_nonref and fps >= p.skip_nonref_min_ratio * p.rate_hz
        if skipping:
            ins.codec_context.skip_frame = "NONREF"
        tb = ins.time_base
        st = out.add_stream("libx264", rate=Fraction(p.rate_hz).limit_denominator(1000))
        st.width, st.height, st.pix_fmt = pw, ph, "yuv420p"
        st.time_base = PROXY_TIME_BASE
        st.codec_context.time_base = PROXY_TIME_BASE
        st.gop_size = max(1, int(round(p.gop_s * p.rate_hz)))
        # zerolatency: no lookahead or frame threads, so the encoder keeps no frame queue and runs
        # beside the (threaded) decoder in its own thread.
        st.options = {"crf": str(p.crf), "preset": p.preset, "bf": "0", "tune": "zerolatency"}
        encoder = _Encoder(out, st)
        t0 = None
        try:
            for frame in inp.decode(ins):
                n_decoded += 1
                if frame.pts is None:
                    continue
                if t0 is None:
                    if skipping and ins.start_time is not None and frame.pts != ins.start_time:
                        raise _MissedTick()  # the first frame may have been a skipped one: t_s from it
                    t0 = frame.pts
                t = float((frame.pts - t0) * tb)
                if t < next_tick * period - 1e-6 or t <= last_t:
                    continue
                tick = int(np.floor(t / period + 1e-6))
                if skipping and tick > next_tick:  # a period without a decoded frame
                    raise _MissedTick()
                next_tick = tick + 1
                last_t = t
                small = frame.reformat(width=rw, height=rh, format="yuv420p", interpolation="AREA")
                if rotation_deg:
                    rgb = _rotate(small.to_ndarray(format="rgb24"), rotation_deg)
                    small = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                gray = small.to_ndarray(format="gray") if rotation_deg else _luma(small)
                i = len(cols["t_s"])
                cols["frame_index"].append(i)
                cols["t_s"].append(t)
                cols["is_keyframe"].append(bool(frame.key_frame))
                _, sd = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
                cols["blur"].append(float(sd[0, 0]) ** 2)
                cols["brightness"].append(cv2.mean(gray)[0] / 255.0)
                tiny = cv2.resize(gray, (max(1, pw // 4), max(1, ph // 4)), interpolation=cv2.INTER_AREA)
                cols["motion"].append(0.0 if prev_small is None else
                                      cv2.mean(cv2.absdiff(tiny, prev_small))[0] / 255.0)
                prev_small = tiny
                small.pts = int(round(t * 1000))
                small.time_base = PROXY_TIME_BASE
                small.pict_type = av.video.frame.PictureType.NONE
                encoder.put(small)
                if progress and n_source and n_decoded % 300 == 0:
                    progress(n_decoded, n_source)
            encoder.close()
        except av.error.FFmpegError as e:
            writing = encoder.error is e
            encoder.close(abort=True)
            if writing:  # the proxy could not be written (a full disk): name that file, not the source
                raise VideoError(proxy_path, f"cannot write the proxy of {src}: {e.strerror or e}") from None
            raise VideoError(src, f"decoding failed after {n_decoded} frames: {e.strerror or e}") from None
        except BaseException:
            encoder.close(abort=True)
            raise
    if progress and n_source:
        progress(n_source, n_source)
    if not cols["t_s"]:
        raise VideoError(src, "no frame could be decoded")
    wall = time.perf_counter() - t_start
    stats = dict(n_sampled=len(cols["t_s"]), n_decoded=n_decoded, proxy_width=pw, proxy_height=ph,
                 seconds=wall, decode_fps=n_decoded / wall if wall > 0 else 0.0, skipped_nonref=skipping)
    return cols, stats


class _Encoder:
    """Encodes and muxes frames in a worker thread (PyAV releases the GIL inside the codec), so
    decoding the source and encoding the proxy overlap."""

    def __init__(self, out, stream, depth: int = 8):
        import queue
        import threading

        self.out, self.stream = out, stream
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="proxy-encoder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            frame = self.q.get()
            if frame is None:
                break
            if self.error is not None:
                continue
            try:
                for pkt in self.stream.encode(frame):
                    self.out.mux(pkt)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = e
        if self.error is None:
            try:
                for pkt in self.stream.encode(None):
                    self.out.mux(pkt)
            except BaseException as e:  # noqa: BLE001
                self.error = e

    def put(self, frame) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(frame)

    def close(self, abort: bool = False) -> None:
        if abort:
            self.error = self.error or RuntimeError("aborted")
        self.q.put(None)
        self.thread.join()
        if self.error is not None and not abort:
            raise self.error


def _luma(frame) -> np.ndarray:
    """The Y plane of a yuv420p frame as a HxW uint8 array (no colour conversion)."""
    plane = frame.planes[0]
    buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : plane.width]


def count_frames(path: str) -> int:
    """Frames in a video by demuxing (no decoding)."""
    with open_av(path) as c:
        s = c.streams.video[0]
        return sum(1 for pkt in c.demux(s) if pkt.size > 0)
