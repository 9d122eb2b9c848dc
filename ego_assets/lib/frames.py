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
    # Frames nobody samples and no other frame refers to (most B-frames) are not decoded (``_SkipPlan``);
    # the sampled frames, and all that is measured on them, are exactly a full decode's. False decodes
    # every frame (the baseline of benchmarks/frames.py).
    skip_unsampled: bool = True

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


class _Sampler:
    """The sampling rule: the first frame at or after each tick of the ``period`` grid, times from the
    first frame (frames must come in presentation order)."""

    def __init__(self, period: float):
        self.period, self.next_tick, self.last_t = period, 0, -np.inf

    def keep(self, t: float) -> bool:
        if t < self.next_tick * self.period - 1e-6 or t <= self.last_t:
            return False
        self.next_tick = int(np.floor(t / self.period + 1e-6)) + 1
        self.last_t = t
        return True


class _MissedTick(Exception):
    """A frame the sampling keeps was left undecoded (see ``_SkipPlan``): decode again in full."""


# Packets read ahead of the one being decided: every frame shown before it is then known (decoders
# reorder over at most 16 frames in H.264 and HEVC).
LOOKAHEAD = 48
_MARGIN_S = 1e-3  # a frame this close below a tick is always decoded


class _SkipPlan:
    """Which packets the sampling may leave undecoded.

    A frame that is not the first of its sampling period is never kept. If no other frame refers to it
    either, FFmpeg's ``skip_frame = NONREF`` set for its packet leaves it out, and every other frame
    decodes bit for bit as in a full decode (a reference frame is decoded whatever the setting; the
    setting travels with each packet, frame threads included). A packet is decided once ``LOOKAHEAD``
    later packets are read, so the earlier frames of its period are known; a frame within ``_MARGIN_S``
    below a tick is always decoded. ``check`` then runs the sampling rule over every packet's time and
    tells whether each frame it keeps was decoded: where not (a decoder that drops frames or reorders
    further), the caller decodes again in full. Why by hand: FFmpeg skips frames by type, not by time."""

    def __init__(self, time_base, period: float):
        self.tb, self.period = time_base, period
        self.t0: int | None = None
        self.pts: list[int] = []
        self.first_in: dict[int, int] = {}  # period -> the earliest pts read in it
        self.n_marked = 0  # packets marked NONREF (a reference frame among them still decodes)

    def _period(self, pts: int, ahead: float = 0.0) -> int:
        """The period of the frame at ``pts`` (+ ``ahead`` seconds): the ``k`` of the sampling rule's
        ``t >= k * period - 1e-6``."""
        return int(np.floor((float((pts - self.t0) * self.tb) + ahead + 1e-6) / self.period))

    def _read(self, pts: int) -> None:
        b = self._period(pts)
        if pts < self.first_in.get(b, pts + 1):
            self.first_in[b] = pts

    def packets(self, container, stream):
        """(packet, skip) in decode order; ``skip``: leave the frame out unless it is a reference."""
        from collections import deque

        window: deque = deque()

        def decide(pkt):
            if self.t0 is None:
                if not self.pts:
                    return pkt, False
                self.t0 = min(self.pts)  # the first LOOKAHEAD packets hold the first frame shown
                for q in self.pts:
                    self._read(q)
            skip = False
            if pkt.pts is not None and not pkt.is_discard and pkt.pts > self.t0:
                b = self._period(pkt.pts)
                # an earlier frame of its period, and not just below the next tick
                skip = self.first_in.get(b, pkt.pts) < pkt.pts and self._period(pkt.pts, _MARGIN_S) == b
            self.n_marked += skip
            return pkt, skip

        for pkt in container.demux(stream):
            window.append(pkt)
            if pkt.pts is not None and not pkt.is_discard:
                self.pts.append(pkt.pts)
                if self.t0 is not None:
                    self._read(pkt.pts)
            if len(window) > LOOKAHEAD:
                yield decide(window.popleft())
        while window:
            yield decide(window.popleft())

    def check(self, t0: int | None, decoded: set[int]) -> bool:
        """Whether every frame a full decode would keep (times from ``t0``, the first frame decoded) was
        decoded."""
        if t0 is None or t0 != self.t0:
            return not self.n_marked
        rule = _Sampler(self.period)
        return all(q in decoded for q in sorted(set(self.pts)) if rule.keep(float((q - t0) * self.tb)))


def sample_frames(src: str, proxy_path: str, width: int, height: int, rotation_deg: int,
                  p: FrameParams = FrameParams(),
                  progress: Callable[[int, int], None] | None = None,
                  n_source: int | None = None) -> tuple[dict, dict]:
    """Decode ``src``, keep the first frame at or after each tick of the ``rate_hz`` grid, write them to
    ``proxy_path`` (H.264) and measure blur (variance of the Laplacian), brightness (mean luma in
    [0, 1]) and motion (mean absolute luma change from the previous sampled frame, in [0, 1]).

    Frames that are not kept and that no other frame refers to are not decoded (``_SkipPlan``: about a
    third of a 30 fps B-frame stream sampled at 10 Hz); the result is exactly a full decode's, which is
    run instead where the plan missed a kept frame.

    Returns (columns of the ``frames`` table, stats)."""
    try:
        return _sample(src, proxy_path, width, height, rotation_deg, p, progress, n_source,
                       skip=p.skip_unsampled)
    except _MissedTick:
        return _sample(src, proxy_path, width, height, rotation_deg, p, progress, n_source, skip=False)


def _sample(src, proxy_path, width, height, rotation_deg, p, progress, n_source, skip: bool):
    import av
    import cv2

    pw, ph = proxy_size(width, height, rotation_deg, p.long_side)
    # resize before rotating: the pre-rotation size of the proxy
    rw, rh = (ph, pw) if rotation_deg in (90, 270) else (pw, ph)
    period = 1.0 / p.rate_hz
    cols: dict[str, list] = {k: [] for k in ("frame_index", "t_s", "is_keyframe", "blur", "brightness",
                                             "motion")}
    t_start = time.perf_counter()
    n_read = n_decoded = 0
    prev_small = None
    rule = _Sampler(period)
    decoded: set[int] = set()
    with open_av(src) as inp, open_av(proxy_path, "w", format="mp4") as out:
        ins = inp.streams.video[0]
        ins.thread_type = "AUTO"
        cc = ins.codec_context
        tb = ins.time_base
        plan = _SkipPlan(tb, period) if skip else None
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

        def source_frames():
            nonlocal n_read
            packets = plan.packets(inp, ins) if plan else ((pkt, False) for pkt in inp.demux(ins))
            for pkt, skip_it in packets:
                n_read += pkt.size > 0
                want = "NONREF" if skip_it else "DEFAULT"
                if cc.skip_frame != want:
                    cc.skip_frame = want
                yield from cc.decode(pkt)
                if progress and n_source and pkt.size > 0 and n_read % 300 == 0:
                    progress(n_read, n_source)

        try:
            for frame in source_frames():
                n_decoded += 1
                if frame.pts is None:
                    continue
                if t0 is None:
                    t0 = frame.pts
                decoded.add(frame.pts)
                t = float((frame.pts - t0) * tb)
                if not rule.keep(t):
                    continue
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
            if plan is not None and not plan.check(t0, decoded):
                raise _MissedTick()
            encoder.close()
        except av.error.FFmpegError as e:
            writing = encoder.error is e
            encoder.close(abort=True)
            if writing:  # the proxy could not be written (a full disk): name that file, not the source
                raise VideoError(proxy_path, f"cannot write the proxy of {src}: {e.strerror or e}") from None
            where = f"{cols['t_s'][-1]:.2f} s" if cols["t_s"] else "the start"
            raise VideoError(src, f"decoding failed after {where} of video: {e.strerror or e}") from None
        except BaseException:
            encoder.close(abort=True)
            raise
    if progress and n_source:
        progress(n_source, n_source)
    if not cols["t_s"]:
        raise VideoError(src, "no frame could be decoded")
    wall = time.perf_counter() - t_start
    stats = dict(n_sampled=len(cols["t_s"]), n_decoded=n_decoded, n_skipped=n_read - n_decoded,
                 proxy_width=pw, proxy_height=ph, seconds=wall,
                 decode_fps=n_read / wall if wall > 0 else 0.0)
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
