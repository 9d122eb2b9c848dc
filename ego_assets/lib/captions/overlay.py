"""Overlay frames for captioning: a few frames of a segment with the hand's future wrist path drawn on.

Why: a vision-language model sees a few still frames; drawing where the wrist goes next (projected from
the world-frame trajectory into each frame's camera) tells it which hand acts and what the motion is,
which still frames alone do not. The path is coloured by time (the same ramp in every frame of the
segment) and each frame is numbered in order, so the prompt can refer to "frame 1..4".

Geometry: world points -> camera of that frame with ``T_wc`` inverted, projected with the intrinsics.
When the calibration has a distortion model (fisheye / radtan) and rectified intrinsics (``rect_*``), the
frame is undistorted to them - with an explicit ``undistort`` callable, else
``ego_assets.lib.geometry.calibration.undistorter(calib)`` - and the points projected with them; failing
that, the points are projected through the distortion model onto the raw frame (equally correct).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ego_assets.lib.captions.base import SegmentView

log = logging.getLogger(__name__)

Undistort = Callable[[np.ndarray], np.ndarray]
_NO_DISTORTION = {"", "none", "pinhole", "rectified"}


def _get(calib: dict, key: str):
    v = calib.get(key)
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def _geometry_undistorter(calib: dict) -> Undistort | None:
    try:
        from ego_assets.lib.geometry.calibration import undistorter  # written by the geometry stage
    except ImportError:
        return None
    try:
        return undistorter(calib)
    except Exception as e:  # a signature we do not know: project through the distortion instead
        log.warning("geometry undistorter unusable (%s: %s); projecting with the distortion model",
                    type(e).__name__, e)
        return None


@dataclass
class Projector:
    """Projects camera-frame points onto (possibly undistorted) frames of one calibration."""

    K: np.ndarray  # at the calibration's size
    dist: np.ndarray | None
    model: str  # "none", "radtan" or "fisheye" (for the points: what the drawn-on image needs)
    size: tuple[int, int] | None  # (width, height) the calibration refers to
    undistort: Undistort | None

    def prepare(self, img: np.ndarray) -> np.ndarray:
        return self.undistort(img) if self.undistort is not None else img

    def K_for(self, width: int, height: int) -> np.ndarray:
        if not self.size or (width, height) == tuple(self.size):
            return self.K
        sx, sy = width / self.size[0], height / self.size[1]
        return np.diag([sx, sy, 1.0]) @ self.K

    def project(self, pts_cam: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) camera points -> ((M, 2) pixels, (M,) bool in front of the camera)."""
        import cv2

        pts = np.asarray(pts_cam, np.float64).reshape(-1, 3)
        front = pts[:, 2] > 0.02
        uv = np.full((len(pts), 2), np.nan)
        if not front.any():
            return uv, front
        K = self.K_for(width, height)
        p = pts[front]
        zero = np.zeros(3)
        if self.model == "fisheye":
            out, _ = cv2.fisheye.projectPoints(p.reshape(-1, 1, 3), zero, zero, K, self.dist[:4].reshape(4, 1))
        elif self.model == "radtan":
            out, _ = cv2.projectPoints(p, zero, zero, K, self.dist)
        else:
            out, _ = cv2.projectPoints(p, zero, zero, K, None)
        uv[front] = out.reshape(-1, 2)
        return uv, front


def make_projector(calib: dict, undistort: Undistort | None = None) -> Projector:
    """Pick the image (raw or undistorted) and the projection model from a calibration row."""
    for k in ("fx", "fy", "cx", "cy"):
        if _get(calib, k) is None:
            raise ValueError(f"calibration: missing {k!r} (have {sorted(calib)})")
    size = None
    if _get(calib, "width") and _get(calib, "height"):
        size = (int(calib["width"]), int(calib["height"]))
    model = str(_get(calib, "distortion_model") or "none").lower()
    dist = np.asarray(_get(calib, "dist_coeffs") or [], np.float64)
    distorted = model not in _NO_DISTORTION and dist.size and np.any(dist != 0)
    raw_K = np.array([[calib["fx"], 0, calib["cx"]], [0, calib["fy"], calib["cy"]], [0, 0, 1.0]])
    rect = [_get(calib, f"rect_{k}") for k in ("fx", "fy", "cx", "cy")]
    has_rect = all(v is not None for v in rect)
    rect_K = np.array([[rect[0], 0, rect[2]], [0, rect[1], rect[3]], [0, 0, 1.0]]) if has_rect else raw_K
    if not distorted:
        return Projector(rect_K, None, "none", size, None)
    if model not in ("fisheye", "radtan"):
        raise ValueError(f"calibration: unknown distortion_model {model!r} (expected none, radtan, fisheye)")
    # rectify only towards known rectified intrinsics (rect_*); without them, draw on the raw frame
    und = (undistort or _geometry_undistorter(calib)) if has_rect else None
    if und is not None:
        return Projector(rect_K, None, "none", size, und)
    if model == "fisheye" and dist.size < 4:
        raise ValueError(f"calibration: fisheye needs 4 distortion coefficients, got {dist.size}")
    return Projector(raw_K, dist, model, size, None)


def overlay_frame_indices(view: SegmentView, n: int) -> list[int]:
    """``n`` frames evenly spaced over the segment (its first and last included), among its frames."""
    fi = view.frame_index
    if len(fi) <= n:
        return fi.tolist()
    pos = np.unique(np.round(np.linspace(0, len(fi) - 1, n)).astype(int))
    return fi[pos].tolist()


def _ramp(n: int) -> np.ndarray:
    """(n, 3) RGB colours of a perceptual ramp (early = blue/purple, late = yellow/red)."""
    import cv2

    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]
    return lut[np.clip(np.round(np.linspace(0, 255, max(n, 1))).astype(int), 0, 255)]


def draw_overlay(img: np.ndarray, view: SegmentView, frame: int, order: int, projector: Projector) -> np.ndarray:
    """The frame (RGB) with the wrist path from ``frame`` to the segment's end, coloured by time over
    the whole segment, the current wrist circled, and the label ``order`` (1-based) in a corner."""
    import cv2

    out = np.ascontiguousarray(projector.prepare(img)).copy()
    h, w = out.shape[:2]
    colours = _ramp(len(view.frame_index))
    k0 = int(np.searchsorted(view.frame_index, frame))
    if frame in view.poses:
        pts_c = view.to_camera(frame, view.wrist[k0:])
        uv, front = projector.project(pts_c, w, h)
        thick = max(2, int(round(min(w, h) / 160)))
        shift = 4  # sub-pixel drawing
        fixed_pts = np.round(np.nan_to_num(uv) * (1 << shift)).astype(np.int64)
        fixed_pts = np.clip(fixed_pts, -(1 << 24), 1 << 24)  # far off-image points stay drawable
        segs = [j for j in range(len(uv) - 1) if front[j] and front[j + 1]]
        for dark in (True, False):  # a dark outline first: the path stays visible on any background
            for j in segs:
                a, b = tuple(fixed_pts[j].tolist()), tuple(fixed_pts[j + 1].tolist())
                c = (0, 0, 0) if dark else tuple(int(v) for v in colours[k0 + j + 1])
                cv2.line(out, a, b, c, thick + 2 if dark else thick, cv2.LINE_AA, shift)
        if len(uv) and front[0]:
            centre = tuple(fixed_pts[0].tolist())
            cv2.circle(out, centre, (thick * 3) << shift, (255, 255, 255), thick, cv2.LINE_AA, shift)
            cv2.circle(out, centre, (thick * 3) << shift, tuple(int(v) for v in colours[k0]), max(1, thick // 2),
                       cv2.LINE_AA, shift)
    scale = max(0.5, min(w, h) / 400)
    label = f"{order}"
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.2, 2)
    cv2.rectangle(out, (0, 0), (tw + 12, th + base + 12), (0, 0, 0), -1)
    cv2.putText(out, label, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale * 1.2, (255, 255, 255), 2, cv2.LINE_AA)
    tag = f"{view.hand} hand"
    (tw2, th2), base2 = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, 1)
    cv2.rectangle(out, (w - tw2 - 12, 0), (w, th2 + base2 + 10), (0, 0, 0), -1)
    cv2.putText(out, tag, (w - tw2 - 6, th2 + 5), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def encode_jpeg(img_rgb: np.ndarray, quality: int = 85) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding of an overlay frame failed")
    return buf.tobytes()


def render_overlays(proxy_path: str, views: list[SegmentView], calib: dict, n_frames: int = 4,
                    undistort: Undistort | None = None, quality: int = 85,
                    progress: Callable[[int, int], None] | None = None) -> dict[int, list[tuple[int, bytes]]]:
    """segment_id -> [(frame_index, JPEG bytes)] of ``n_frames`` overlay frames per segment, in order.

    The proxy is decoded once, front to back; each needed frame is drawn for every segment that wants
    it and encoded at once, so memory holds JPEGs, not decoded frames."""
    from ego_assets.lib.video import iter_frames

    if n_frames < 1 or not views:
        return {v.segment_id: [] for v in views}
    projector = make_projector(calib, undistort)
    wanted: dict[int, list[tuple[SegmentView, int]]] = {}
    for v in views:
        for order, f in enumerate(overlay_frame_indices(v, n_frames), start=1):
            wanted.setdefault(int(f), []).append((v, order))
    out: dict[int, list[tuple[int, int, bytes]]] = {v.segment_id: [] for v in views}
    last = max(wanted)
    done, total = 0, len(wanted)
    seen = set()
    for i, _t, img in iter_frames(proxy_path, 0, last + 1):
        if i not in wanted:
            continue
        seen.add(i)
        for v, order in wanted[i]:
            out[v.segment_id].append((order, i, encode_jpeg(draw_overlay(img, v, i, order, projector), quality)))
        done += 1
        if progress:
            progress(done, total)
    if done < total:
        missing = sorted(set(wanted) - seen)[:5]
        raise ValueError(f"proxy video {proxy_path!r}: ended before frame {last} (needed for overlays; "
                         f"{total - done} frame(s) not decoded, e.g. {missing})")
    return {sid: [(i, b) for _o, i, b in sorted(lst)] for sid, lst in out.items()}
