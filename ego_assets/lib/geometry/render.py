"""A small synthetic egocentric scene with exact ground truth, for the pose tests and benchmark.

Textured planes (a table, walls, box faces; textures are real photographs bundled with scikit-image)
are rendered with one homography warp per plane and the painter's algorithm; the camera follows a
head-like path (yaw/pitch sweeps about a neck pivot, so rotations come with the small translations a
real head makes, plus torso sway); skin-coloured hands with a texture of their own move over the table
with pauses, and their 21 joints give exact ``hand_tracks`` rows (kp2d, metric joints_cam). The world
("room") frame is OpenCV-like: y down, z forward, the eye at the origin when the head is level.

Not used by the pipeline: tests and ``benchmarks/camera_poses.py`` import it. scikit-image is a
development dependency, imported only when textures are built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import numpy as np
import pyarrow as pa
from scipy.spatial.transform import Rotation

from ego_assets.lib.arrow import fixed
from ego_assets.lib.video import open_av

SKIN_RGB = np.array([222, 170, 138], np.float32)
GRID_W, GRID_H = 32, 18  # coarse depth maps given to the pose stage as a metric cue


@dataclass
class Plane:
    """A textured rectangle: texture pixel (a, b) sits at origin + a/W * u + b/H * v (world, metres)."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray  # HxWx3 uint8 RGB

    def corners(self) -> np.ndarray:
        o, u, v = self.origin, self.u, self.v
        return np.stack([o, o + u, o + u + v, o + v])


def _texture(name: str, size: int = 512) -> np.ndarray:
    import cv2

    from ego_assets.lib.extras import require

    require("skimage", "synthetic", "the synthetic renderer's textures")
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = np.ascontiguousarray(img[..., :3])
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def default_scene() -> list[Plane]:
    """Table below the eyes (y = 0.55 m), a back wall at 2.0 m, side walls and two box faces on the
    table: depths from 0.3 to 2.5 m, like a person working at a desk."""
    P = lambda *a: np.array(a, float)  # noqa: E731
    return [
        Plane(P(-1.6, -1.0, 2.0), P(3.2, 0, 0), P(0, 1.55, 0), _texture("astronaut")),       # back wall
        Plane(P(-1.6, -1.0, 0.0), P(0, 0, 2.0), P(0, 1.55, 0), _texture("rocket")),          # left wall
        Plane(P(1.6, -1.0, 2.0), P(0, 0, -2.0), P(0, 1.55, 0), _texture("coffee")),          # right wall
        Plane(P(-1.6, 0.55, 0.15), P(3.2, 0, 0), P(0, 0, 1.85), _texture("gravel", 768)),    # table
        Plane(P(0.05, 0.27, 0.95), P(0.32, 0, 0), P(0, 0.28, 0), _texture("chelsea", 256)),  # box face
        Plane(P(-0.5, 0.33, 0.8), P(0.22, 0, 0), P(0, 0.22, 0), _texture("camera", 256)),    # box face
        Plane(P(-0.5, 0.33, 0.8), P(0.0, 0, 0.22), P(0, 0.22, 0), _texture("coins", 256)),   # box side
    ]


def intrinsics(width: int = 640, height: int = 360, hfov_deg: float = 90.0) -> np.ndarray:
    f = width / 2 / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])


# -- camera paths ------------------------------------------------------------------------------------

def head_path(t: np.ndarray, kind: str = "head") -> np.ndarray:
    """Camera-to-room poses (N, 4, 4) at times ``t``: ``head`` = yaw/pitch/roll sweeps about a neck
    pivot (10 cm below, 8 cm behind the eye) plus torso sway; ``static`` = a fixed camera looking down
    at the table; ``fast`` = larger, quicker sweeps (up to ~90 deg/s); ``seated`` = ``head`` with 0.3 x
    its translation (a seated person: a few centimetres)."""
    t = np.asarray(t, float)
    if kind == "static":
        R = Rotation.from_euler("x", -30, degrees=True).as_matrix()
        T = np.tile(np.eye(4), (len(t), 1, 1))
        T[:, :3, :3] = R
        return T
    amp = 2.2 if kind == "fast" else 1.0
    yaw = amp * (18 * np.sin(2 * np.pi * t / 7.0) + 7 * np.sin(2 * np.pi * t / 2.3 + 0.5))
    pitch = -33 + amp * (8 * np.sin(2 * np.pi * t / 5.1 + 1.0) + 3 * np.sin(2 * np.pi * t / 1.7))
    roll = 3 * np.sin(2 * np.pi * t / 4.3)
    R = (Rotation.from_euler("y", yaw[:, None], degrees=True)
         * Rotation.from_euler("x", pitch[:, None], degrees=True)
         * Rotation.from_euler("z", roll[:, None], degrees=True)).as_matrix()
    torso = np.stack([0.07 * np.sin(2 * np.pi * t / 9.0), 0.015 * np.sin(2 * np.pi * t / 3.1),
                      0.05 * np.sin(2 * np.pi * t / 6.5 + 0.7)], -1)
    eye_from_pivot = np.array([0.0, -0.10, 0.08])
    centre = torso - eye_from_pivot + R @ eye_from_pivot
    if kind == "seated":  # the same sweeps, a seated person's small translation (~6 cm extent)
        centre = 0.3 * centre
    T = np.tile(np.eye(4), (len(t), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = centre
    return T


# -- hands -------------------------------------------------------------------------------------------

# right hand, palm down, fingers along +z, knuckles bent down (+y); metres, MediaPipe joint order
_RIGHT_HAND = np.array([
    [0, 0, 0],
    [-0.025, 0.005, 0.025], [-0.045, 0.01, 0.045], [-0.06, 0.015, 0.07], [-0.07, 0.02, 0.09],
    [-0.03, 0, 0.09], [-0.033, 0.01, 0.13], [-0.035, 0.02, 0.155], [-0.036, 0.03, 0.175],
    [-0.008, 0, 0.095], [-0.009, 0.01, 0.14], [-0.01, 0.02, 0.168], [-0.01, 0.03, 0.19],
    [0.012, 0, 0.09], [0.013, 0.01, 0.13], [0.014, 0.02, 0.155], [0.015, 0.03, 0.175],
    [0.03, 0, 0.08], [0.033, 0.01, 0.11], [0.035, 0.02, 0.13], [0.036, 0.03, 0.145],
], float)
_FINGERS = [[0, 1, 2, 3, 4], [0, 5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [0, 17, 18, 19, 20]]
_PALM = [0, 1, 2, 5, 9, 13, 17]


@dataclass
class HandPath:
    """A hand moving between waypoints on the table, pausing at each (a hand still in the world is
    what the pose stage's hand-scale cue needs)."""

    hand: str  # 'left' | 'right'
    waypoints: np.ndarray  # (K, 3) wrist positions, room frame
    move_s: float = 1.2
    pause_s: float = 1.5
    yaw_deg: np.ndarray = field(default_factory=lambda: np.zeros(1))

    def wrist(self, t: float) -> tuple[np.ndarray, float]:
        k = len(self.waypoints)
        period = self.move_s + self.pause_s
        seg = int(t // period)
        a, b = self.waypoints[seg % k], self.waypoints[(seg + 1) % k]
        phase = (t - seg * period - self.pause_s) / self.move_s
        s = 0.0 if phase <= 0 else 0.5 - 0.5 * np.cos(np.pi * min(phase, 1.0))
        ya, yb = self.yaw_deg[seg % len(self.yaw_deg)], self.yaw_deg[(seg + 1) % len(self.yaw_deg)]
        return a + s * (b - a), ya + s * (yb - ya)

    def joints(self, t: float) -> np.ndarray:
        p, yaw = self.wrist(t)
        local = _RIGHT_HAND * (np.array([-1, 1, 1]) if self.hand == "left" else 1)
        R = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        return p + local @ R.T


def default_hands() -> list[HandPath]:
    y = 0.42  # wrist ~13 cm above the table top (0.55), at arm's length from the eyes
    return [
        HandPath("right", np.array([[0.15, y, 0.38], [0.25, y, 0.55], [0.08, y - 0.05, 0.50]]),
                 yaw_deg=np.array([-10.0, 15.0, 0.0])),
        HandPath("left", np.array([[-0.18, y, 0.42], [-0.10, y - 0.04, 0.58], [-0.25, y, 0.48]]),
                 move_s=1.0, pause_s=1.9, yaw_deg=np.array([10.0, -5.0, 20.0])),
    ]


# -- rendering ---------------------------------------------------------------------------------------

def _clip_near(pts: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon (camera frame) against z >= near."""
    out = []
    n = len(pts)
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out)


class Renderer:
    """Renders the planes (and hands) for a camera pose; keeps the per-pixel ray grid for depth."""

    def __init__(self, planes: list[Plane], K: np.ndarray, size: tuple[int, int] = (640, 360),
                 hands: list[HandPath] | None = None, seed: int = 0):
        import cv2

        self.planes, self.K, self.size, self.hands = planes, K, size, hands or []
        w, h = size
        u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.rx = (u - K[0, 2]) / K[0, 0]
        self.ry = (v - K[1, 2]) / K[1, 1]
        rng = np.random.default_rng(seed)
        # skin texture: blotches at a few scales, so that corners are found on the hands (and the
        # pose stage has to mask them out)
        noise = rng.random((h * 2, w * 2)).astype(np.float32)
        tex = sum(cv2.GaussianBlur(noise, (0, 0), s) * (s ** 0.8) for s in (1.5, 4.0))
        tex = (tex - tex.mean()) / (tex.std() + 1e-6)
        self.skin = np.clip(0.8 + 0.18 * tex, 0.4, 1.2).astype(np.float32)

    def render(self, T_wc: np.ndarray, t: float = 0.0, with_depth: bool = False
               ) -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
        """(RGB image, depth map of the scene in metres (hands not included) or None, hand
        observations) for camera pose ``T_wc``."""
        import cv2

        w, h = self.size
        R_cw = T_wc[:3, :3].T
        t_cw = -R_cw @ T_wc[:3, 3]
        img = np.zeros((h, w, 3), np.uint8)
        depth = np.full((h, w), np.inf, np.float32) if with_depth else None
        order = []
        for p in self.planes:
            cc = p.corners() @ R_cw.T + t_cw
            order.append((-np.mean(cc[:, 2]), p, cc))
        order.sort(key=lambda x: x[0])  # far first
        for _, p, cc in order:
            poly = _clip_near(cc, 0.05)
            if len(poly) < 3:
                continue
            proj = poly @ self.K.T
            px = proj[:, :2] / proj[:, 2:3]
            if (px[:, 0].max() < 0 or px[:, 0].min() > w or px[:, 1].max() < 0 or px[:, 1].min() > h):
                continue
            # warp only the bounding box of the visible polygon (most planes cover a small part)
            x0, y0 = max(0, int(np.floor(px[:, 0].min()))), max(0, int(np.floor(px[:, 1].min())))
            x1, y1 = min(w, int(np.ceil(px[:, 0].max())) + 1), min(h, int(np.ceil(px[:, 1].max())) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillConvexPoly(mask, np.round((np.clip(px, -1e5, 1e5) - [x0, y0]) * 16).astype(np.int32),
                               255, lineType=cv2.LINE_8, shift=4)
            th, tw = p.texture.shape[:2]
            A = np.column_stack([R_cw @ p.u / tw, R_cw @ p.v / th, R_cw @ p.origin + t_cw])
            H = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ self.K @ A
            warped = cv2.warpPerspective(p.texture, H, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)
            roi = img[y0:y1, x0:x1]
            cv2.copyTo(warped, mask, roi)
            if with_depth:
                n = np.cross(R_cw @ p.u, R_cw @ p.v)
                d = float(n @ (R_cw @ p.origin + t_cw))
                den = n[0] * self.rx[y0:y1, x0:x1] + n[1] * self.ry[y0:y1, x0:x1] + n[2]
                with np.errstate(divide="ignore", invalid="ignore"):
                    z = (d / den).astype(np.float32)
                droi = depth[y0:y1, x0:x1]
                cv2.copyTo(z, mask, droi)
        hands = []
        for hp in self.hands:
            J = hp.joints(t) @ R_cw.T + t_cw
            if J[0, 2] < 0.1:
                continue
            uv = (J @ self.K.T)[:, :2] / J[:, 2:3]
            if not (0 <= uv[0, 0] < w and 0 <= uv[0, 1] < h):
                continue
            hm = np.zeros((h, w), np.uint8)
            hull = cv2.convexHull(np.round(uv[_PALM] * 16).astype(np.int32))
            cv2.fillConvexPoly(hm, hull, 255, shift=4)
            for chain in _FINGERS:
                for a, b in zip(chain[:-1], chain[1:]):
                    th = max(2, int(round(0.02 * self.K[0, 0] / J[b, 2])))
                    cv2.line(hm, tuple(np.round(uv[a] * 16).astype(int)), tuple(np.round(uv[b] * 16).astype(int)),
                             255, th, lineType=cv2.LINE_AA, shift=4)
            ys, xs = np.nonzero(hm)
            if len(ys):
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                ox, oy = int(round(uv[0, 0])) % w, int(round(uv[0, 1])) % h
                tex = self.skin[h - oy + y0: h - oy + y1, w - ox + x0: w - ox + x1]  # moves with the wrist
                skin = SKIN_RGB[None, None] * tex[..., None]
                a = (hm[y0:y1, x0:x1].astype(np.float32) / 255.0)[..., None]
                roi = img[y0:y1, x0:x1]
                roi[:] = np.clip(roi * (1 - a) + skin * a, 0, 255).astype(np.uint8)
            hands.append(dict(hand=hp.hand, kp2d=uv.astype(np.float32), joints_cam=J.astype(np.float32),
                              mask_area=int((hm > 127).sum())))
        return img, depth, hands


@dataclass
class Sequence:
    """A rendered sequence: ground-truth poses (first camera = world), times, and per-frame hands."""

    t_s: np.ndarray
    T_wc: np.ndarray  # (N, 4, 4), relative to the first camera
    K: np.ndarray
    size: tuple[int, int]
    hand_rows: list[dict]
    median_depth: np.ndarray  # metric median scene depth per frame (hands excluded), nan if not computed
    depth_grids: np.ndarray | None = None  # (N, GRID_H, GRID_W) coarse metric depth maps

    def frames_table(self) -> pa.Table:
        n = len(self.t_s)
        return pa.table(dict(frame_index=pa.array(np.arange(n), pa.int32()), t_s=pa.array(self.t_s),
                             is_keyframe=pa.array(np.zeros(n, bool)),
                             blur=pa.array(np.full(n, 100.0, np.float32)),
                             brightness=pa.array(np.full(n, 0.5, np.float32)),
                             motion=pa.array(np.zeros(n, np.float32))))

    def hand_tracks(self) -> pa.Table:
        return hand_tracks_table(self.hand_rows)

    def scene_depth(self, with_grid: bool = True, every: int = 1) -> pa.Table:
        """Exact metric scene depth in the form the pose stage takes it (what a depth model gives)."""
        sel = np.arange(0, len(self.t_s), every)
        cols = dict(frame_index=pa.array(sel, pa.int32()), t_s=pa.array(self.t_s[sel]),
                    depth_m=pa.array(self.median_depth[sel]))
        if with_grid and self.depth_grids is not None:
            g = self.depth_grids[sel]
            cols["depth_grid"] = pa.array(list(g.reshape(len(sel), -1).astype(np.float32)), pa.list_(pa.float32()))
            cols["grid_w"] = pa.array([g.shape[2]] * len(sel), pa.int32())
            cols["grid_h"] = pa.array([g.shape[1]] * len(sel), pa.int32())
        return pa.table(cols)


def hand_tracks_table(rows: list[dict]) -> pa.Table:
    """Rows (frame_index, t_s, hand, kp2d (21,2), joints_cam (21,3)) as a hand_tracks-shaped table."""
    def fsl(arrs, n):
        return fixed(np.asarray(arrs, np.float32).reshape(-1) if arrs else np.zeros(0, np.float32),
                     pa.list_(pa.float32(), n))

    return pa.table(dict(
        frame_index=pa.array([r["frame_index"] for r in rows], pa.int32()),
        t_s=pa.array([r["t_s"] for r in rows], pa.float64()),
        hand=pa.array([r["hand"] for r in rows], pa.string()),
        score=pa.array([1.0] * len(rows), pa.float32()),
        kp2d=fsl([r["kp2d"] for r in rows], 42),
        joints_cam=fsl([r["joints_cam"] for r in rows], 63),
    ))


def render_sequence(path: str | None, n_frames: int = 60, fps: float = 10.0, kind: str = "head",
                    size: tuple[int, int] = (640, 360), hfov_deg: float = 90.0, hands: bool = True,
                    blackout: tuple[int, int] | None = None, crf: int = 23, with_depth: bool = False,
                    t0: float = 0.0) -> tuple[Sequence, list[np.ndarray] | None]:
    """Render ``n_frames`` at ``fps``; write them to ``path`` as an H.264 proxy (ms timestamps), or
    return them in memory when ``path`` is None. ``blackout=(a, b)``: frames a..b-1 are nearly black
    (a lens cover), to exercise tracking loss and recovery."""
    K = intrinsics(*size, hfov_deg)
    t = t0 + np.arange(n_frames) / fps
    T_room = head_path(t, kind)
    T0inv = np.linalg.inv(T_room[0])
    rend = Renderer(default_scene(), K, size, default_hands() if hands else None)
    rows: list[dict] = []
    med = np.full(n_frames, np.nan)
    grids = np.full((n_frames, GRID_H, GRID_W), np.nan, np.float32) if with_depth else None
    frames: list[np.ndarray] = []

    def gen() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            img, depth, hs = rend.render(T_room[i], t[i], with_depth=with_depth)
            if blackout and blackout[0] <= i < blackout[1]:
                img = (img // 16).astype(np.uint8)
                img[:] = img.mean().astype(np.uint8)
                hs = []
            if with_depth:
                import cv2

                finite = depth[np.isfinite(depth)]
                med[i] = float(np.median(finite)) if finite.size else np.nan
                grids[i] = cv2.resize(np.where(np.isfinite(depth), depth, med[i]), (GRID_W, GRID_H),
                                      interpolation=cv2.INTER_AREA)
            for hd in hs:
                rows.append(dict(frame_index=i, t_s=float(t[i]), hand=hd["hand"], kp2d=hd["kp2d"],
                                 joints_cam=hd["joints_cam"]))
            yield img

    if path is None:
        frames = list(gen())
    else:
        write_video(path, gen(), t, fps, crf)
    seq = Sequence(t, np.einsum("ij,njk->nik", T0inv, T_room), K, size, rows, med, grids)
    return seq, (frames if path is None else None)


def write_video(path: str, images, t_s, fps: float = 10.0, crf: int = 23) -> None:
    """H.264 proxy-like video (yuv420p, time base 1/1000, pts = t_s * 1000), as the frames stage writes."""
    import av

    with open_av(path, "w", format="mp4") as out:
        st = None
        for img, t in zip(images, t_s):
            if st is None:
                st = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                st.width, st.height, st.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                st.time_base = Fraction(1, 1000)
                st.codec_context.time_base = Fraction(1, 1000)
                st.gop_size = max(1, int(round(fps)))
                st.options = {"crf": str(crf), "preset": "veryfast", "bf": "0"}
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuv420p")
            fr.pts = int(round(t * 1000))
            fr.time_base = Fraction(1, 1000)
            for pkt in st.encode(fr):
                out.mux(pkt)
        if st is not None:
            for pkt in st.encode(None):
                out.mux(pkt)


def trajectory_errors(T_wc_gt: np.ndarray, poses: pa.Table) -> dict:
    """Errors of an estimated ``camera_poses`` table against ground-truth camera-to-world poses: the
    estimate is aligned by a similarity (rotation mean, then Umeyama scale/translation) on the tracked
    frames; rotation error per frame (deg), ATE RMSE as a percentage of the ground-truth path length,
    and the alignment scale (1 for a correct metric estimate; ``scale_est_on_truth`` is the unbiased
    one on short, small paths)."""
    from ego_assets.lib.geometry.stitch import fit_sim3

    tr = poses.column("tracked").to_numpy(zero_copy_only=False).astype(bool)
    q = np.column_stack([poses.column(c).to_numpy(zero_copy_only=False) for c in ("qx", "qy", "qz", "qw")])
    c = np.column_stack([poses.column(k).to_numpy(zero_copy_only=False) for k in ("tx", "ty", "tz")])
    out = dict(tracked_fraction=float(tr.mean()))
    if tr.sum() < 3:
        return out | dict(rot_err_deg_median=np.nan, ate_pct=np.nan, scale=np.nan)
    R_est = Rotation.from_quat(q[tr]).as_matrix()
    R_gt, c_gt = T_wc_gt[tr, :3, :3], T_wc_gt[tr, :3, 3]
    sim, _ = fit_sim3(R_gt, c_gt, R_est, c[tr])
    R_al = np.einsum("ij,njk->nik", sim.R, R_est)
    err = Rotation.from_matrix(np.einsum("nji,njk->nik", R_gt, R_al)).magnitude()
    c_al = sim.s * c[tr] @ sim.R.T + sim.t
    path = float(np.linalg.norm(np.diff(T_wc_gt[:, :3, 3], axis=0), axis=1).sum())
    ate = float(np.sqrt((np.linalg.norm(c_al - c_gt, axis=1) ** 2).mean()))
    # the scale with the noise where it is (in the estimate): the estimate regressed on the truth;
    # the alignment's scale shrinks toward zero on a short path whose noise is comparable to its size
    x, y = c[tr] @ sim.R.T, c_gt - c_gt.mean(0)
    x = x - x.mean(0)
    xy = float((x * y).sum())
    return out | dict(rot_err_deg_median=float(np.degrees(np.median(err))),
                      scale_est_on_truth=float((y * y).sum() / xy) if xy > 0 else np.nan,
                      rot_err_deg_max=float(np.degrees(err.max())), ate=ate, path_length=path,
                      ate_pct=100 * ate / path if path > 0 else np.nan, scale=float(sim.s))
