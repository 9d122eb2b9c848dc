"""Small synthetic videos for tests: moving textures with a known frame count, VFR and rotated variants,
and the broken files of the bad-input list."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (so that resizing and encoding keep it recognisable)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def frame_at(i: int, h: int, w: int, base: np.ndarray, speed: int = 2, static: bool = False) -> np.ndarray:
    img = base if static else np.roll(base, shift=i * speed, axis=1)
    img = img.copy()
    if not static:
        x = (i * 3) % max(1, w - 16)
        img[h // 3: h // 3 + 16, x: x + 16] = (255, 255, 255)
    return img


def make_video(path: str | Path, n_frames: int = 30, fps: float = 30.0, size=(160, 120),
               vfr: bool = False, rotation: int = 0, static: bool = False, seed: int = 0,
               faststart: bool = False, codec: str = "libx264", gop: int = 15) -> list[float]:
    """Write an H.264 MP4; returns the presentation times (s) of its frames. ``vfr`` alternates frame
    intervals of 1/fps and 2/fps. ``rotation`` (clockwise degrees) goes into the track's display matrix."""
    w, h = size
    base = texture(h, w, seed)
    times, t = [], 0.0
    for i in range(n_frames):
        times.append(round(t, 3))
        t += (2.0 if (vfr and i % 2) else 1.0) / fps
    frames = (frame_at(i, h, w, base, static=static) for i in range(n_frames))
    write_frames(path, frames, fps=fps, times=times, rotation=rotation, codec=codec, size=size, gop=gop,
                 options={"movflags": "faststart"} if faststart else None)
    return times


def set_rotation(path: str | Path, degrees_cw: int) -> None:
    """Patch the display matrix of the first video track header (tkhd) of an MP4 in place."""
    data = bytearray(Path(path).read_bytes())
    i = data.find(b"tkhd")
    assert i > 0, "no tkhd box"
    version = data[i + 4]
    off = i + 4 + 4 + (32 if version == 1 else 20) + 8 + 8  # version/flags, times/ids, reserved, layer..
    one, zero = 0x10000, 0
    # rotation matrices [a b u; c d v; x y w] in 16.16 (w in 2.30), for a clockwise display rotation
    m = {90: (zero, one, -one, zero), 180: (-one, zero, zero, -one), 270: (zero, -one, one, zero)}[degrees_cw]
    a, b, c, d = m
    struct.pack_into(">9i", data, off, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    Path(path).write_bytes(bytes(data))


def make_audio_only(path: str | Path, seconds: float = 1.0) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as c:
        st = c.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        samples = (np.sin(np.arange(n) / 10.0) * 0.3).astype(np.float32)[None, :]
        fr = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        fr.sample_rate = 16000
        fr.pts = 0
        for p in st.encode(fr):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)


def make_bad_files(folder: str | Path) -> dict[str, Path]:
    """The bad inputs of the foundation issue, by kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["zero_byte"] = folder / "empty.mp4"
    out["zero_byte"].write_bytes(b"")
    out["text"] = folder / "notes.mp4"
    out["text"].write_text("this is not a video\n" * 20)
    good = folder / "_whole.tmp"
    make_video(good, n_frames=60, seed=7, faststart=True)
    data = good.read_bytes()
    out["truncated"] = folder / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 2])
    good.unlink()
    out["audio_only"] = folder / "audio_only.mp4"
    make_audio_only(out["audio_only"])
    out["single_frame"] = folder / "single_frame.mp4"
    make_video(out["single_frame"], n_frames=1, seed=8)
    return out


def make_encoded_video(path: str | Path, codec: str, fmt: str, n_frames: int = 30, fps: int = 20,
                       size=(160, 120), pix_fmt: str = "yuv420p", seed: int = 0) -> None:
    """A constant-rate video in any codec/container PyAV can write (VP8 WebM, ProRes MOV, MJPEG AVI,
    ...): the inputs that are valid videos but not H.264 in MP4."""
    w, h = size
    base = texture(h, w, seed)
    write_frames(path, (frame_at(i, h, w, base) for i in range(n_frames)), fps=fps, fmt=fmt, codec=codec,
                 pix_fmt=pix_fmt, size=size, codec_options={}, time_base=Fraction(1, fps))


def read_frames(path: str | Path, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
    """RGB frames ``start:stop`` of a video (decode order = presentation order for the clips we use)."""
    import av

    out = []
    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if stop is not None and i >= stop:
                break
            if i >= start:
                out.append(fr.to_ndarray(format="rgb24"))
    return out


def write_frames(path: str | Path, frames, fps: float = 30.0, times: list[float] | None = None,
                 rotation: int = 0, fmt: str = "mp4", codec: str = "libx264", pix_fmt: str = "yuv420p",
                 size: tuple[int, int] | None = None, gop: int | None = None, options: dict | None = None,
                 codec_options: dict | None = None, time_base: Fraction = Fraction(1, 1000)) -> None:
    """Encode ``frames`` (HxWx3 uint8 or PyAV frames, all one size; a list, or any iterable with
    ``size=(w, h)``, which PyAV frames are scaled to; a decoded keyframe stays a keyframe) with
    presentation ``times`` (default i / fps); a ``rotation`` (clockwise degrees) goes into the MP4 display
    matrix, as phones record portrait video. ``options``: the container's (e.g. movflags);
    ``codec_options``: the encoder's (default for libx264: ultrafast, no B-frames). ``time_base``: of the
    timestamps (default ms; ``Fraction(1, fps)`` gives exact frame-rate ticks, pts = frame number)."""
    import av

    if size is None:
        frames = list(frames)
        h, w = frames[0].shape[:2]
    else:
        w, h = size
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        st = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        st.time_base = time_base
        st.codec_context.time_base = time_base
        if gop is not None:
            st.gop_size = gop
        if codec_options is not None:
            st.options = dict(codec_options)
        elif codec == "libx264":
            st.options = {"preset": "ultrafast", "bf": "0"}
        for i, img in enumerate(frames):
            t = times[i] if times is not None else i / fps
            if isinstance(img, av.VideoFrame):  # a decoded frame: resized as is, its picture type kept
                fr = img.reformat(width=w, height=h, format=pix_fmt)
            else:
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            fr.pts = int(round(t * time_base.denominator / time_base.numerator))
            fr.time_base = time_base
            for p in st.encode(fr):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    if rotation:
        set_rotation(path, rotation)


def fisheye_view(img: np.ndarray, size: int, hfov_deg: float) -> np.ndarray:
    """A square equidistant-fisheye image (``r = f theta``) of horizontal FoV ``hfov_deg`` looking through
    the pinhole image ``img`` (assumed 90 deg horizontal FoV); outside it, black. What a wide head-mounted
    camera records, made from an ordinary frame."""
    import cv2

    h, w = img.shape[:2]
    f_fish = (size / 2.0) / np.radians(hfov_deg / 2.0)
    f_pin = (w / 2.0) / np.tan(np.radians(45.0))
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = u - (size - 1) / 2.0, v - (size - 1) / 2.0
    r = np.hypot(x, y)
    theta = r / f_fish
    ok = theta < np.radians(85)
    rp = np.where(ok, f_pin * np.tan(np.minimum(theta, np.radians(85))), 0.0)
    scale = np.where(r > 0, rp / np.maximum(r, 1e-9), 0.0)
    mx = (x * scale + (w - 1) / 2.0).astype(np.float32)
    my = (y * scale + (h - 1) / 2.0).astype(np.float32)
    mx[~ok] = -1
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def write_size_change(path: str | Path, first: list[np.ndarray], second: list[np.ndarray], fps: int = 30) -> None:
    """An MPEG-TS video whose frame size changes mid-stream (two encodings of different sizes back to back,
    as a concatenated capture is)."""
    import tempfile

    data = b""
    with tempfile.TemporaryDirectory() as d:
        for i, part in enumerate((first, second)):
            p = Path(d) / f"{i}.ts"
            write_frames(p, part, fps=fps, times=[(i * len(first) + k) / fps for k in range(len(part))],
                         fmt="mpegts")
            data += p.read_bytes()
    Path(path).write_bytes(data)


def frames_table(times) -> pa.Table:
    """The frames table of a proxy whose frame i is shown at ``times[i]`` (frame_index, t_s)."""
    t = np.asarray(times, float)
    return pa.table({"frame_index": pa.array(np.arange(len(t)), pa.int32()), "t_s": pa.array(t, pa.float64())})


def sample_frames(src: str | Path, fps: float = 10.0, long_side: int = 640, start_s: float = 0.0,
                  dur_s: float | None = None) -> tuple[list[np.ndarray], list[float]]:
    """The frames of a clip as the frames stage samples them: one every 1/``fps`` s from ``start_s`` (for
    ``dur_s``), long side scaled to ``long_side`` (even sizes, area interpolation); RGB images and their
    times t_s."""
    import av
    import cv2

    images, times = [], []
    nxt = start_s
    with av.open(str(src)) as c:
        for f in c.decode(video=0):
            t = float(f.pts * f.time_base)
            if t + 1e-6 < nxt:
                continue
            if dur_s is not None and t >= start_s + dur_s:
                break
            img = f.to_ndarray(format="rgb24")
            h, w = img.shape[:2]
            s = long_side / max(h, w)
            if s != 1.0:
                img = cv2.resize(img, (int(round(w * s / 2)) * 2, int(round(h * s / 2)) * 2),
                                 interpolation=cv2.INTER_AREA)
            images.append(img)
            times.append(t)
            nxt += 1.0 / fps
    return images, times


def real_proxy(src: str | Path, dst: str | Path, start_s: float = 0.0, dur_s: float | None = None,
               fps: float = 10.0, long_side: int = 640) -> np.ndarray:
    """Part of a real clip re-encoded as the frames stage writes a proxy (``fps``, long side
    ``long_side``, H.264 CRF 18, pts = t_s in ms); returns the frames' times t_s."""
    images, times = sample_frames(src, fps, long_side, start_s, dur_s)
    write_frames(dst, images, fps=int(round(fps)), times=times, codec_options={"crf": "18", "preset": "veryfast"})
    return np.array(times)
