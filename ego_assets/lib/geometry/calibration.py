"""Camera intrinsics of the proxy video, its undistortion, and static-vs-moving camera classification.

Every later stage works on the *proxy* frames (long side 640 px), so the intrinsics are expressed at
the proxy size. They come, in order of trust, from

1. the source's camera hints (``hfov_deg``, or ``intrinsics`` [fx, fy, cx, cy] at the upright source
   resolution with an optional ``distortion`` {model: fisheye|radtan, coeffs}): the user knows the camera;
2. container metadata (a 35 mm-equivalent focal length, or a focal length with a sensor width), which
   phones and some action cameras write;
3. a field-of-view prior for egocentric cameras (:data:`EGOCENTRIC_HFOV_PRIOR_DEG`).

Distorted cameras are rectified with OpenCV maps; the rectified pinhole intrinsics (``rect_*``) are
what downstream stages use on frames passed through :func:`undistorter`.
Pixel convention: OpenCV's, pixel centres at integer coordinates, so the image spans
[-0.5, W-0.5] and its centre is ((W-1)/2, (H-1)/2).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa

from ego_assets.lib.video import open_av

DISTORTION_MODELS = ("none", "fisheye", "radtan")
RADTAN_COEFF_COUNTS = (4, 5, 8, 12, 14)  # what cv2.initUndistortRectifyMap accepts

EGOCENTRIC_HFOV_PRIOR_DEG = 90.0
"""Horizontal field of view assumed when nothing is known about the camera.

Egocentric footage comes from three kinds of camera: phones strapped to the head or chest (main camera,
about 65-75 deg horizontal), smart glasses and head-mounted webcams (about 80-100 deg) and action
cameras / research glasses (GoPro "linear" about 85-92 deg, GoPro wide and Aria about 110-120 deg, but
those are strongly distorted and deserve a hint). 90 deg sits in the middle of the pinhole-like
cameras: for a true FoV between 70 and 110 deg the focal length is off by at most ~40 %, which the hand
lifting (hand-size prior) and the pose scale (metric cues) absorb better than an extreme guess."""

ALLOWED_HFOV_RANGE_DEG = (20.0, 170.0)  # metadata / model estimates outside this are ignored
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 35 mm-equivalent focal lengths refer to this diagonal

# tags (lower-cased) under which containers and EXIF-like metadata carry a 35 mm-equivalent focal length
_F35_TAGS = ("focal_length_35mm", "focallengthin35mmformat", "focallengthin35mmfilm",
             "focal_length_35mm_equivalent", "com.apple.quicktime.camera.focal_length.35mm_equivalent",
             "35mm_focal_length")
_FMM_TAGS = ("focal_length_mm", "focallength", "focal_length", "com.apple.quicktime.camera.focal_length")
_SENSOR_W_TAGS = ("sensor_width_mm", "sensorwidth", "sensor_width")


class CalibrationInputError(ValueError):
    """A hint, metadata value or table given to calibration is unusable; the message names it."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole (+ distortion) intrinsics at a given image size. ``method`` says where they came from."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = "none"
    dist_coeffs: tuple[float, ...] = field(default_factory=tuple)
    method: str = ""

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distorted(self) -> bool:
        return self.distortion_model != "none" and any(abs(c) > 0 for c in self.dist_coeffs)

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera seen at another resolution (distortion coefficients act on normalised
        coordinates, so they do not change)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5,
                       cy=(self.cy + 0.5) * sy - 0.5, width=int(width), height=int(height))

    def hfov_deg(self) -> float:
        """True horizontal field of view: the angle between the rays through the middles of the left and
        right image borders (not the pinhole formula, which is meaningless for a fisheye)."""
        left = np.array([[-0.5, self.cy]])
        right = np.array([[self.width - 0.5, self.cy]])
        return float(np.degrees(_ray_angle_x(self, right)[0] - _ray_angle_x(self, left)[0]))


def _ray_angle_x(intr: Intrinsics, px: np.ndarray) -> np.ndarray:
    """Signed horizontal angle (radians, positive to the right) of the ray through each pixel on the
    principal row."""
    import cv2

    x = (px[:, 0] - intr.cx) / intr.fx
    if not intr.distorted:
        return np.arctan(x)
    if intr.distortion_model == "fisheye":
        # equidistant model: theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8);
        # solved for theta by Newton, valid beyond 90 deg where undistortPoints is not
        k = np.asarray(intr.dist_coeffs[:4], float)
        theta_d = np.abs(x)
        theta = theta_d.copy()
        for _ in range(30):
            t2 = theta * theta
            f = theta * (1 + k[0] * t2 + k[1] * t2**2 + k[2] * t2**3 + k[3] * t2**4) - theta_d
            df = 1 + 3 * k[0] * t2 + 5 * k[1] * t2**2 + 7 * k[2] * t2**3 + 9 * k[3] * t2**4
            theta = theta - f / np.where(np.abs(df) < 1e-9, 1e-9, df)
        return np.sign(x) * theta
    und = cv2.undistortPoints(px.reshape(-1, 1, 2).astype(np.float64), intr.K,
                              np.asarray(intr.dist_coeffs, float)).reshape(-1, 2)
    return np.arctan(und[:, 0])


# -- where intrinsics come from --------------------------------------------------------------------

def pinhole_from_hfov(hfov_deg: float, width: int, height: int, method: str) -> Intrinsics:
    """Square-pixel pinhole camera with the principal point at the image centre."""
    if not (0 < hfov_deg < 180):
        raise CalibrationInputError(f"hfov_deg={hfov_deg!r}: must be in (0, 180) degrees")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height), method=method)


def prior_intrinsics(proxy_size: tuple[int, int],
                     hfov_deg: float = EGOCENTRIC_HFOV_PRIOR_DEG) -> Intrinsics:
    return pinhole_from_hfov(hfov_deg, *proxy_size, method=f"prior:hfov{hfov_deg:g}")


def intrinsics_from_hints(hints: dict | None, proxy_size: tuple[int, int],
                          source_size: tuple[int, int] | None) -> Intrinsics | None:
    """Intrinsics at the proxy size from a source's camera hints, or None when it gives none.

    ``intrinsics`` are at the upright source resolution ``source_size`` (or at ``intrinsics_size``
    [w, h] when the hint carries one) and are scaled to the proxy; ``hfov_deg`` alone means a pinhole
    camera (with a fisheye ``distortion`` model, an equidistant one) centred on the image."""
    if not hints:
        return None
    pw, ph = proxy_size
    dist = hints.get("distortion")
    model, coeffs = "none", ()
    if dist:
        if not isinstance(dist, dict):
            raise CalibrationInputError(f"hint distortion={dist!r}: must be {{model, coeffs}}")
        model = str(dist.get("model", "")).lower()
        coeffs = tuple(float(c) for c in dist.get("coeffs", ()) or ())
        if model not in ("fisheye", "radtan"):
            raise CalibrationInputError(f"hint distortion model {model!r}: must be fisheye or radtan")
        if model == "fisheye" and len(coeffs) != 4:
            raise CalibrationInputError(f"hint fisheye coeffs {list(coeffs)}: need 4 (k1..k4)")
        if model == "radtan" and len(coeffs) not in RADTAN_COEFF_COUNTS:
            raise CalibrationInputError(f"hint radtan coeffs {list(coeffs)}: need 4, 5, 8, 12 or 14 "
                                        "(k1, k2, p1, p2[, k3, ...] as OpenCV orders them)")
    if hints.get("intrinsics") is not None:
        vals = hints["intrinsics"]
        try:
            fx, fy, cx, cy = (float(v) for v in vals)
        except (TypeError, ValueError):
            raise CalibrationInputError(f"hint intrinsics={vals!r}: must be [fx, fy, cx, cy]") from None
        if fx <= 0 or fy <= 0 or not all(map(math.isfinite, (fx, fy, cx, cy))):
            raise CalibrationInputError(f"hint intrinsics={vals!r}: fx and fy must be positive and finite")
        size = hints.get("intrinsics_size") or source_size
        if size is None:
            raise CalibrationInputError("hint intrinsics: the source resolution is unknown (videos row has "
                                        "no width/height and the hint no intrinsics_size)")
        sw, sh = int(size[0]), int(size[1])
        if not (0 <= cx < sw and 0 <= cy < sh):
            raise CalibrationInputError(f"hint intrinsics={vals!r}: principal point outside the "
                                        f"{sw}x{sh} source image")
        base = Intrinsics(fx, fy, cx, cy, sw, sh, model, coeffs, method="hint:intrinsics")
        return base.scaled_to(pw, ph)
    if hints.get("hfov_deg") is not None:
        h = float(hints["hfov_deg"])
        if not (0 < h < 180):
            raise CalibrationInputError(f"hint hfov_deg={h!r}: must be in (0, 180)")
        if model == "fisheye":
            f = (pw / 2.0) / math.radians(h / 2.0)  # equidistant: r = f theta
            return Intrinsics(f, f, (pw - 1) / 2.0, (ph - 1) / 2.0, pw, ph, model, coeffs, "hint:hfov")
        return replace(pinhole_from_hfov(h, pw, ph, "hint:hfov"), distortion_model=model, dist_coeffs=coeffs)
    if dist:
        raise CalibrationInputError("hint distortion without intrinsics or hfov_deg")
    return None


def intrinsics_from_metadata(tags: dict | None, proxy_size: tuple[int, int]) -> Intrinsics | None:
    """Pinhole intrinsics from container/EXIF-like tags, or None when they hold nothing usable.

    A 35 mm-equivalent focal length is defined on the 43.27 mm diagonal of a full frame, so it converts
    to pixels on the image diagonal whatever the aspect ratio: f_px = f35 * diag_px / 43.27."""
    if not tags:
        return None
    low = {str(k).lower(): v for k, v in tags.items()}
    pw, ph = proxy_size

    def num(keys: Iterable[str]) -> float | None:
        for k in keys:
            if k in low and low[k] not in (None, ""):
                try:
                    v = float(str(low[k]).split()[0].rstrip("m"))
                except ValueError:
                    continue
                if math.isfinite(v) and v > 0:
                    return v
        return None

    f35 = num(_F35_TAGS)
    f_px = None
    if f35 is not None:
        f_px = f35 * math.hypot(pw, ph) / FULL_FRAME_DIAGONAL_MM
        method = "metadata:f35"
    else:
        fmm, sw = num(_FMM_TAGS), num(_SENSOR_W_TAGS)
        if fmm is not None and sw is not None:
            f_px = fmm / sw * pw
            method = "metadata:focal_mm"
    if f_px is None:
        return None
    hfov = math.degrees(2 * math.atan(pw / 2.0 / f_px))
    if not (ALLOWED_HFOV_RANGE_DEG[0] <= hfov <= ALLOWED_HFOV_RANGE_DEG[1]):
        return None  # a tag we misread (e.g. a zoomed value): fall through to the prior
    return Intrinsics(f_px, f_px, (pw - 1) / 2.0, (ph - 1) / 2.0, pw, ph, method=method)


def read_container_metadata(path: str | None) -> dict:
    """Tags of a local video file (container and first video stream); {} when it cannot be read. Only
    local files: a source on object storage is not downloaded for a few tags."""
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open_av(path) as c:
            tags = dict(c.metadata)
            if c.streams.video:
                tags.update(c.streams.video[0].metadata)
            return tags
    except Exception:  # an unreadable file is the probe's business, not calibration's
        return {}


def source_size(video: dict) -> tuple[int, int] | None:
    """Upright size of the source video (hints are given for what the viewer sees)."""
    w, h = video.get("display_width"), video.get("display_height")
    if w and h:
        return int(w), int(h)
    w, h = video.get("width"), video.get("height")
    if not (w and h):
        return None
    if int(video.get("rotation_deg") or 0) % 180 == 90:
        w, h = h, w
    return int(w), int(h)


def resolve_intrinsics(hints: dict | None, metadata: dict | None, proxy_size: tuple[int, int],
                       src_size: tuple[int, int] | None) -> Intrinsics:
    """Hints, else metadata, else the egocentric prior."""
    _check_size(proxy_size)
    return (intrinsics_from_hints(hints, proxy_size, src_size)
            or intrinsics_from_metadata(metadata, proxy_size)
            or prior_intrinsics(proxy_size))


def _check_size(size) -> None:
    try:
        w, h = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise CalibrationInputError(f"proxy_size={size!r}: must be (width, height)") from None
    if w < 8 or h < 8:
        raise CalibrationInputError(f"proxy_size={size!r}: too small")


# -- undistortion ----------------------------------------------------------------------------------

def rectified_intrinsics(intr: Intrinsics) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the undistorted image, same size, cropped to valid pixels (no black
    borders, which would create spurious features); equal to the input when there is no distortion."""
    import cv2

    if not intr.distorted:
        return intr.fx, intr.fy, intr.cx, intr.cy
    size = (intr.width, intr.height)
    D = np.asarray(intr.dist_coeffs, float)
    if intr.distortion_model == "fisheye":
        Kn = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
            intr.K, D.reshape(4, 1), size, np.eye(3), balance=0.0, new_size=size)
    else:
        Kn, _ = cv2.getOptimalNewCameraMatrix(intr.K, D, size, 0.0, size)
    return float(Kn[0, 0]), float(Kn[1, 1]), float(Kn[0, 2]), float(Kn[1, 2])


@lru_cache(maxsize=8)
def _maps(model: str, coeffs: tuple, K: tuple, Kn: tuple, size: tuple) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    K = np.array(K, float).reshape(3, 3)
    Kn = np.array(Kn, float).reshape(3, 3)
    D = np.asarray(coeffs, float)
    if model == "fisheye":
        return cv2.fisheye.initUndistortRectifyMap(K, D.reshape(4, 1), np.eye(3), Kn, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(K, D, None, Kn, size, cv2.CV_16SC2)


def _row_intrinsics(calib_row: dict) -> Intrinsics:
    try:
        return Intrinsics(float(calib_row["fx"]), float(calib_row["fy"]), float(calib_row["cx"]),
                          float(calib_row["cy"]), int(calib_row["width"]), int(calib_row["height"]),
                          str(calib_row.get("distortion_model") or "none"),
                          tuple(float(c) for c in (calib_row.get("dist_coeffs") or ())),
                          str(calib_row.get("method") or ""))
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationInputError(f"calibration row {calib_row!r}: missing or bad field ({e})") from None


def camera_matrix(calib_row: dict, rectified: bool = True) -> np.ndarray:
    """3x3 K of the frames downstream stages see (rectified by default, falling back to the raw
    intrinsics when the row has no rect_* columns)."""
    intr = _row_intrinsics(calib_row)
    if rectified and calib_row.get("rect_fx") is not None:
        return np.array([[calib_row["rect_fx"], 0, calib_row["rect_cx"]],
                         [0, calib_row["rect_fy"], calib_row["rect_cy"]], [0, 0, 1]], float)
    return intr.K


def undistorter(calib_row: dict) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function that rectifies one proxy frame (HxW or HxWxC, same size out) to the pinhole camera
    ``rect_fx..rect_cy`` of the row; None when the camera has no distortion (frames are used as-is).
    The maps are computed once per calibration and cached."""
    import cv2

    intr = _row_intrinsics(calib_row)
    if not intr.distorted:
        return None
    if calib_row.get("rect_fx") is not None:
        Kn = camera_matrix(calib_row, rectified=True)
    else:
        rfx, rfy, rcx, rcy = rectified_intrinsics(intr)
        Kn = np.array([[rfx, 0, rcx], [0, rfy, rcy], [0, 0, 1]], float)
    size = (intr.width, intr.height)
    m1, m2 = _maps(intr.distortion_model, intr.dist_coeffs, tuple(intr.K.ravel()), tuple(Kn.ravel()), size)

    def undistort(img: np.ndarray) -> np.ndarray:
        if img.shape[1] != size[0] or img.shape[0] != size[1]:
            raise CalibrationInputError(f"frame of size {img.shape[1]}x{img.shape[0]} given to an "
                                        f"undistorter calibrated for {size[0]}x{size[1]}")
        return cv2.remap(img, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    return undistort


# -- static or moving camera -----------------------------------------------------------------------

STATIC_THRESHOLD_PX = 0.5
"""Background motion (px per proxy frame, 90th percentile over sampled frame pairs) below which the camera
is static. At ~10 fps and f ~ 320 px, 0.5 px/frame is ~1 deg/s: a head-worn camera never stays that still
for 90 % of a video, while a camera on a tripod measures ~0.05-0.2 px/frame (codec noise)."""


@dataclass
class CameraMotion:
    label: str  # 'static' | 'moving'
    value: float  # px/frame at proxy size (90th percentile over pairs); nan when nothing was measurable
    pair_values: list[float]
    n_pairs: int


def background_motion(g0: np.ndarray, g1: np.ndarray, mask: np.ndarray | None = None,
                      max_features: int = 300) -> float | None:
    """Motion of the background between two gray frames, in px, or None when too little texture.

    Features are tracked with pyramidal KLT (forward-backward checked). Two hypotheses compete: the
    background did not move (features with flow < 1 px), or it moved as the dominant homography
    (RANSAC). Hands moving over a static scene are a minority that neither hypothesis needs; the static
    hypothesis wins when it explains at least 60 % as many features as the homography, which biases
    towards 'static' when hands cover much of a still scene. ``mask``: nonzero = ignore (hands)."""
    import cv2

    keep = None if mask is None else (mask == 0).astype(np.uint8) * 255
    p0 = cv2.goodFeaturesToTrack(g0, max_features, 0.01, 8, mask=keep, blockSize=5)
    if p0 is None or len(p0) < 20:
        return None
    p1, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, None, winSize=(21, 21), maxLevel=3)
    pb, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, None, winSize=(21, 21), maxLevel=3)
    ok = (st.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm((pb - p0).reshape(-1, 2), axis=1) < 0.5)
    if ok.sum() < 15:
        return None
    a, b = p0.reshape(-1, 2)[ok], p1.reshape(-1, 2)[ok]
    d = np.linalg.norm(b - a, axis=1)
    still = d < 1.0
    H, inl = cv2.findHomography(a, b, cv2.RANSAC, 1.0)
    n_h = int(inl.sum()) if H is not None else 0
    if still.sum() >= max(8, 0.6 * n_h):
        return float(np.median(d[still]))
    if H is None or n_h < 8:
        return float(np.median(d))
    inl = inl.ravel().astype(bool)
    ah = cv2.perspectiveTransform(a[inl].reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)
    return float(np.median(np.linalg.norm(ah - a[inl], axis=1)))


def classify_camera_motion(proxy_path: str, n_frames: int,
                           mask_fn: Callable[[int], np.ndarray | None] | None = None,
                           n_pairs: int = 40, threshold_px: float = STATIC_THRESHOLD_PX,
                           undistort: Callable[[np.ndarray], np.ndarray] | None = None,
                           progress: Callable[[int, int], None] | None = None) -> CameraMotion:
    """Static or moving camera from the background motion of up to ``n_pairs`` consecutive proxy frame
    pairs spread over the video (one decoding pass, two frames in memory). ``mask_fn(frame_index)``
    may give a hand mask (nonzero = ignore) once hands are known. OpenCV runs on the step's cores here
    (one in a backfill; ``lib/opencv_threads``)."""
    from ego_assets.lib.opencv_threads import opencv_threads

    with opencv_threads():
        return _classify_camera_motion(proxy_path, n_frames, mask_fn, n_pairs, threshold_px, undistort, progress)


def _classify_camera_motion(proxy_path, n_frames, mask_fn, n_pairs, threshold_px, undistort,
                            progress) -> CameraMotion:
    from ego_assets.lib.video import iter_frames

    if n_frames < 2:
        return CameraMotion("static", 0.0, [], 0)
    starts = np.unique(np.linspace(0, n_frames - 2, min(n_pairs, n_frames - 1)).round().astype(int))
    wanted = set(starts.tolist())
    values: list[float] = []
    prev = None
    stop = int(starts[-1]) + 2
    for i, _, img in iter_frames(proxy_path, 0, stop, fmt="gray"):
        if undistort is not None and (i in wanted or (i - 1) in wanted):
            img = undistort(img)
        if (i - 1) in wanted and prev is not None:
            mask = mask_fn(i - 1) if mask_fn is not None else None
            v = background_motion(prev, img, mask)
            if v is not None:
                values.append(v)
            if progress:
                progress(len(values), len(starts))
        prev = img if i in wanted else None
    if len(values) < min(3, len(starts)):
        # texture-less or unreadable: do not claim 'static' (it would freeze the poses)
        return CameraMotion("moving", float("nan"), values, len(starts))
    value = float(np.percentile(values, 90))
    return CameraMotion("static" if value < threshold_px else "moving", value, values, len(starts))


# -- the calibrations row --------------------------------------------------------------------------

def calibration_table(intr: Intrinsics, motion: CameraMotion,
                      rect: tuple[float, float, float, float] | None = None) -> pa.Table:
    """One row with the columns of schemas.CALIBRATIONS (without partition_key)."""
    rect = rect or rectified_intrinsics(intr)
    row = dict(fx=intr.fx, fy=intr.fy, cx=intr.cx, cy=intr.cy, width=intr.width, height=intr.height,
               distortion_model=intr.distortion_model, dist_coeffs=list(intr.dist_coeffs),
               hfov_deg=intr.hfov_deg(), camera_motion=motion.label, method=intr.method,
               rect_fx=rect[0], rect_fy=rect[1], rect_cx=rect[2], rect_cy=rect[3],
               camera_motion_value=motion.value)
    from ego_assets.lib.schemas import CALIBRATIONS

    schema = pa.schema([f for f in CALIBRATIONS if f.name != "partition_key"])
    return pa.Table.from_pylist([row], schema=schema)


def frames_count(frames: pa.Table) -> int:
    if frames is None or "frame_index" not in frames.column_names:
        raise CalibrationInputError("frames table: missing or without a frame_index column")
    return frames.num_rows


def calibrate_prior(video: dict, proxy_path: str, frames: pa.Table, proxy_size: tuple[int, int],
                    hints: dict | None, progress: Callable[[int, int], None] | None = None,
                    metadata: dict | None = None,
                    mask_fn: Callable[[int], np.ndarray | None] | None = None) -> pa.Table:
    """The default (CPU) calibration: hints, metadata or prior, then camera-motion classification."""
    n = frames_count(frames)
    tags = dict(video.get("metadata") or {})
    tags.update(read_container_metadata(video.get("local_path") or video.get("uri")) if not metadata else {})
    tags.update(metadata or {})
    intr = resolve_intrinsics(hints, tags, proxy_size, source_size(video))
    rect = rectified_intrinsics(intr)
    und = undistorter(_as_row(intr, rect))
    motion = classify_camera_motion(proxy_path, n, mask_fn=mask_fn, undistort=und, progress=progress)
    return calibration_table(intr, motion, rect)


def _as_row(intr: Intrinsics, rect) -> dict:
    return dict(fx=intr.fx, fy=intr.fy, cx=intr.cx, cy=intr.cy, width=intr.width, height=intr.height,
                distortion_model=intr.distortion_model, dist_coeffs=list(intr.dist_coeffs),
                rect_fx=rect[0], rect_fy=rect[1], rect_cx=rect[2], rect_cy=rect[3])
