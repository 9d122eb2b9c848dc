"""Hands backends (stage ``hands``): the interface and the default, CPU-only ``mediapipe`` backend.

Interface: a :class:`~ego_assets.lib.backends.Backend` registered for ``"hands"`` whose method

    track(proxy_path: str, frames: pa.Table, calib: dict, progress=None) -> HandResult

reads the proxy video (frame i of the proxy is ``frame_index`` i of ``frames``), rectifies it with the
calibration row when the camera is distorted, and returns the ``hand_tracks`` rows (identity, left/
right and temporal clean-up done), the raw ``hand_detections`` and a dict of metrics for the UI.
Tables come without ``partition_key``; the wiring passes them through ``schemas.conform``.
:class:`HandsBackend` holds everything after the per-frame detector, so another backend (a GPU
model) only writes :meth:`HandsBackend.detect`, which returns :class:`HandDetections` (typed arrays,
validated on construction: the contract).

The ``mediapipe`` backend: MediaPipe Tasks ``HandLandmarker`` in VIDEO mode (it tracks hands from
frame to frame and runs the palm detector on every frame where it tracks fewer than two; the
opt-in ``palm_every`` policy runs it less often on one-hand frames), two hands, detection thresholds
0.3 with track-level confirmation, then per detection the metric lifting of :mod:`.lifting` at the
hand-size prior, identities and left/right from three independent cues of :mod:`.tracking` (their
agreement recorded per detection, track and video), and per track: depth outliers, outlier
rejection, depth smoothing and gap filling of :mod:`.cleanup`, one finger skeleton fitted onto the
keypoints' rays, the shape smoothing, and the wrist frame and finger pose of :mod:`.skeleton`.

``score`` of a row is MediaPipe's handedness probability (the only per-hand confidence the Tasks API
reports) times a fit factor (1 for ``pnp``, 0.8 for ``pnp:size_prior``, 0.5 for ``prior:*``); an
interpolated row has the interpolation of its neighbours' scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import pyarrow as pa

from ego_assets.lib.arrow import fixed, schema_without_key
from ego_assets.lib.backends import Backend, Resources, register
from ego_assets.lib.hands import cleanup, lifting, skeleton, tracking
from ego_assets.lib.hands.model import model_info, resolve_model

FIT_FACTOR = {"pnp": 1.0, "pnp:size_prior": 0.8}
PRIOR_FIT_FACTOR = 0.5


class HandTrackingInputError(ValueError):
    """The proxy, frames table or calibration handed to a hands backend is unusable."""


TRACKS_SCHEMA = schema_without_key("hand_tracks")
DETECTIONS_SCHEMA = schema_without_key("hand_detections")


class HandDetectionsError(ValueError):
    """A hands backend's :meth:`HandsBackend.detect` returned detections that break the contract."""


@dataclass(frozen=True)
class HandDetections:
    """What :meth:`HandsBackend.detect` returns: the per-frame detections of one video, D detections
    over n frames (the contract of the ``hands`` stage; the conformance test checks every backend).

    Per detection (first axis D, row d is one hand in one frame):

    ========================  ============  =========================================================
    ``frame_index``           (D,) int64    frame of the detection, 0..n-1
    ``detection``             (D,) int64    index of the detection within its frame
    ``mp_label``              (D,) str      the detector's own 'Left'/'Right' guess ('' if none)
    ``mp_score``              (D,) float64  its probability in [0, 1] (0.5 if the detector has none)
    ``kp2d``                  (D, 21, 2)    float64, pixels of the rectified frame (MediaPipe order)
    ``world``                 (D, 21, 3)    float64, metric hand shape: any origin, camera-aligned axes
    ``joints_cam``            (D, 21, 3)    float64, metres in the camera frame (z > 0 in front)
    ``fit``                   (D,) str      how joints_cam was obtained: 'pnp', 'pnp:size_prior',
                                            'prior:*' (lifted, rescaled to the hand-size prior), or a
                                            backend's own name (metric joints it measured: kept)
    ``reproj_px``             (D,) float64  reprojection error of the lift (NaN if none)
    ``finger_pose``           (D, 15, 3)    optional, float64: a backend's own finger pose (axis-angle,
                                            e.g. MANO's), kept instead of being recomputed
    ========================  ============  =========================================================

    Per video: ``t_s`` (n,) float64, strictly increasing, the frames table's times (n = number of
    frames); ``image_size`` (w, h) of the proxy or None when no frame was read; ``K`` (3, 3) float64
    intrinsics of the rectified frames, or None with ``image_size``; ``undistorted`` whether frames
    were rectified; ``timing`` seconds spent in ``decode_s``, ``landmarker_s``, ``lifting_s`` (plus any
    part of those, such as ``tile_s``, and counts such as ``tiled_frames``); ``finger_pose_convention`` names ``finger_pose`` (default
    :data:`~ego_assets.lib.hands.skeleton.MANO_POSE_CONVENTION`).

    Arrays are converted to the dtypes above on construction; a wrong shape, a frame index out of
    range, a non-finite keypoint or a missing timing raises :class:`HandDetectionsError` naming the
    backend and the field.
    """

    backend: str
    frame_index: np.ndarray
    detection: np.ndarray
    mp_label: np.ndarray
    mp_score: np.ndarray
    kp2d: np.ndarray
    world: np.ndarray
    joints_cam: np.ndarray
    fit: np.ndarray
    reproj_px: np.ndarray
    t_s: np.ndarray
    image_size: tuple[int, int] | None
    K: np.ndarray | None
    undistorted: bool
    timing: dict
    finger_pose: np.ndarray | None = None
    finger_pose_convention: str | None = None

    TIMING_KEYS: ClassVar[tuple[str, ...]] = ("decode_s", "landmarker_s", "lifting_s")
    _PER_DETECTION: ClassVar[dict] = {  # field -> (dtype, shape after D)
        "frame_index": (np.int64, ()), "detection": (np.int64, ()), "mp_label": (str, ()),
        "mp_score": (np.float64, ()), "kp2d": (np.float64, (21, 2)), "world": (np.float64, (21, 3)),
        "joints_cam": (np.float64, (21, 3)), "fit": (str, ()), "reproj_px": (np.float64, ()),
    }

    def _fail(self, field_: str, why: str):
        raise HandDetectionsError(f"hands backend {self.backend!r}: detect() returned a bad {field_!r}: {why}")

    def __post_init__(self):
        t = np.asarray(self.t_s, np.float64)
        if t.ndim != 1 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
            self._fail("t_s", f"expected (n,) finite, strictly increasing times, got shape {t.shape}")
        object.__setattr__(self, "t_s", t)
        D = None
        for name, (dtype, shape) in self._PER_DETECTION.items():
            v = getattr(self, name)
            try:
                a = np.asarray(v, dtype=dtype) if dtype is not str else np.asarray(v).astype(str)
            except (TypeError, ValueError) as e:
                self._fail(name, f"cannot be read as {np.dtype(dtype).name}: {e}")
            if a.size == 0:
                a = a.reshape((0, *shape))
            if a.ndim != 1 + len(shape) or a.shape[1:] != shape or (D is not None and len(a) != D):
                self._fail(name, f"expected shape {(D if D is not None else 'D', *shape)}, got {a.shape}")
            D = len(a) if D is None else D
            object.__setattr__(self, name, a)
        if D and (self.frame_index.min() < 0 or self.frame_index.max() >= len(t)):
            self._fail("frame_index", f"values must lie in 0..{len(t) - 1} (the frames), got "
                                      f"{self.frame_index.min()}..{self.frame_index.max()}")
        for name in ("kp2d", "world", "joints_cam"):
            if not np.isfinite(getattr(self, name)).all():
                self._fail(name, "non-finite values (leave a hand out rather than return NaN)")
        if D and ((self.mp_score < 0) | (self.mp_score > 1)).any():
            self._fail("mp_score", "probabilities must lie in [0, 1]")
        if self.finger_pose is not None:
            fp = np.asarray(self.finger_pose, np.float64)
            if fp.shape != (D, 15, 3):
                self._fail("finger_pose", f"expected shape ({D}, 15, 3), got {fp.shape}")
            object.__setattr__(self, "finger_pose", fp)
        if self.image_size is not None:
            try:
                w, h = (int(x) for x in self.image_size)
            except (TypeError, ValueError):
                self._fail("image_size", f"expected (width, height), got {self.image_size!r}")
            if w <= 0 or h <= 0:
                self._fail("image_size", f"expected a positive (width, height), got {self.image_size!r}")
            object.__setattr__(self, "image_size", (w, h))
        elif D:
            self._fail("image_size", "None while there are detections")
        if self.K is not None:
            K = np.asarray(self.K, np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all():
                self._fail("K", f"expected a finite (3, 3) matrix, got shape {K.shape}")
            object.__setattr__(self, "K", K)
        object.__setattr__(self, "undistorted", bool(self.undistorted))
        if not isinstance(self.timing, dict) or any(k not in self.timing for k in self.TIMING_KEYS):
            self._fail("timing", f"expected a dict with {', '.join(self.TIMING_KEYS)}, got {self.timing!r}")

    @property
    def n_frames(self) -> int:
        return len(self.t_s)

    def __len__(self) -> int:
        return len(self.frame_index)


@dataclass(frozen=True)
class HandResult:
    """What ``track`` returns: ``tracks`` and ``detections`` in exactly the ``hand_tracks`` and
    ``hand_detections`` schemas without ``partition_key`` (:data:`TRACKS_SCHEMA`,
    :data:`DETECTIONS_SCHEMA`), ``stats`` a JSON-safe dict for the UI and the lineage. A backend that
    subclasses :class:`HandsBackend` gets it from :meth:`HandsBackend.assemble`."""

    tracks: pa.Table
    detections: pa.Table
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, schema in (("tracks", TRACKS_SCHEMA), ("detections", DETECTIONS_SCHEMA)):
            t = getattr(self, name)
            if not isinstance(t, pa.Table) or not t.schema.equals(schema):
                got = t.schema if isinstance(t, pa.Table) else type(t).__name__
                raise HandDetectionsError(f"HandResult.{name}: expected the schema {schema}, got {got}")


def _table(schema: pa.Schema, cols: dict) -> pa.Table:
    arrays = []
    for f in schema:
        v = cols[f.name]
        if pa.types.is_fixed_size_list(f.type):
            arrays.append(fixed(v, f.type))
        else:
            arrays.append(pa.array(np.asarray(v).tolist() if isinstance(v, np.ndarray) else v, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def empty_tracks() -> pa.Table:
    return TRACKS_SCHEMA.empty_table()


def empty_detections() -> pa.Table:
    return DETECTIONS_SCHEMA.empty_table()


def frame_times(frames: pa.Table) -> np.ndarray:
    """t_s indexed by frame_index, validated: frame indices 0..n-1, times finite and increasing."""
    for col in ("frame_index", "t_s"):
        if col not in frames.column_names:
            raise HandTrackingInputError(f"frames table: no {col!r} column (has {frames.column_names})")
    fi = frames.column("frame_index").to_numpy(zero_copy_only=False).astype(np.int64)
    t = frames.column("t_s").to_numpy(zero_copy_only=False).astype(float)
    order = np.argsort(fi, kind="stable")
    fi, t = fi[order], t[order]
    if not np.array_equal(fi, np.arange(len(fi))):
        raise HandTrackingInputError("frames table: frame_index must be 0..n-1 without gaps or repeats "
                                     "(frame i of the proxy is frame_index i)")
    if not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
        raise HandTrackingInputError("frames table: t_s must be finite and strictly increasing")
    return t


def _timestamps_ms(t: np.ndarray) -> np.ndarray:
    """MediaPipe VIDEO timestamps (int ms, strictly increasing) from t_s; sub-millisecond spacing is
    bumped by 1 ms, which only the landmarker's internal smoothing sees."""
    ms = np.round(t * 1000.0).astype(np.int64)
    for i in range(1, len(ms)):
        if ms[i] <= ms[i - 1]:
            ms[i] = ms[i - 1] + 1
    return ms


def proxy_camera(calib: dict, width: int, height: int):
    """(K, undistort function or None) for proxy frames of the given size: the rectified intrinsics
    and OpenCV maps (computed once) for a fisheye/radtan camera, the raw pinhole otherwise."""
    from ego_assets.lib.geometry.calibration import camera_matrix, undistorter

    if not isinstance(calib, dict):
        raise HandTrackingInputError(f"calib: expected a calibrations row dict, got {type(calib).__name__}")
    try:
        cw, ch = int(calib["width"]), int(calib["height"])
    except (KeyError, TypeError, ValueError):
        raise HandTrackingInputError(f"calib: no usable width/height in {calib!r}") from None
    if (cw, ch) != (width, height):
        raise HandTrackingInputError(f"calib is for {cw}x{ch} images but the proxy is {width}x{height}")
    model = str(calib.get("distortion_model") or "none")
    if model in ("fisheye", "radtan"):
        return camera_matrix(calib, rectified=True), undistorter(calib)
    return camera_matrix(calib, rectified=False), None


class HandsBackend(Backend):
    """Base of the hands backends: a subclass implements :meth:`detect` (its detector/regressor on
    every frame); :meth:`assemble` (identities, left/right, clean-up, wrist frame, finger pose, the
    tables) is shared, and ``track = assemble(detect(...))``. A GPU backend (HaWoR, WiLoR, HaMeR...)
    can subclass it and get the same tracks, handedness and checks for free."""

    def __init__(self, max_gap: int = 3, outlier_window: int = 7, outlier_k: float = 4.0,
                 outlier_floor_m: float = 0.05, mp_labels_mirrored: bool | None = None,
                 lift_params: lifting.LiftParams = lifting.LiftParams(),
                 track_params: tracking.TrackParams = tracking.TrackParams(),
                 weights: tracking.EvidenceWeights = tracking.EvidenceWeights(), depth_window: int = 5,
                 min_track_detections: int = 3, smooth_shape: bool = True, track_skeleton: bool = True):
        self.max_gap = max_gap
        self.outlier = (outlier_window, outlier_k, outlier_floor_m)
        self.mp_labels_mirrored = mp_labels_mirrored
        self.lift_params = lift_params
        self.track_params = track_params
        self.weights = weights
        self.depth_window = depth_window  # frames of the per-track depth smoothing (0: none)
        # track-level confirmation: the detector runs with low thresholds (hands at the border, small or
        # blurred), and a detection becomes a hand only when its track has this many detections
        self.min_track_detections = min_track_detections
        self.smooth_shape = smooth_shape  # 3-tap smoothing of the hand shape and finger pose alike
        self.track_skeleton = track_skeleton  # one set of bone lengths per track (its medians)

    def detect(self, proxy_path: str, frames: pa.Table, calib: dict,
               progress: Callable[[int, int], None] | None = None) -> HandDetections:
        """The detector on every frame of the proxy: :class:`HandDetections` (its doc is the contract).
        A backend that measures metric joints itself gives them a ``fit`` of its own (not
        ``pnp``/``prior``), and they keep their size; its own finger pose goes in ``finger_pose``."""
        raise NotImplementedError

    def model_stats(self) -> dict:
        """What to record about the model (path, hash) in the stats."""
        return {}

    # -- shared: identities, handedness, clean-up ------------------------------------------------------

    def assemble(self, det: HandDetections) -> HandResult:
        """Tracks, handedness and temporal clean-up over the detections of one video."""
        if not isinstance(det, HandDetections):
            raise HandDetectionsError(f"hands backend {self.name!r}: detect() must return HandDetections, "
                                      f"got {type(det).__name__}")
        t0 = time.perf_counter()
        t_s, n = det.t_s, det.n_frames
        fi = det.frame_index.astype(np.int64)
        D = len(fi)
        fit = det.fit
        factor = np.array([FIT_FACTOR.get(f, PRIOR_FIT_FACTOR) for f in fit]) if D else np.zeros(0)
        score = det.mp_score * factor if D else np.zeros(0)
        own_pose = det.finger_pose is not None
        convention = (det.finger_pose_convention or skeleton.MANO_POSE_CONVENTION) if own_pose \
            else skeleton.FINGER_POSE_CONVENTION

        def detections_table(tid, cue_n, cue_i):
            return _table(DETECTIONS_SCHEMA, dict(
                frame_index=fi, t_s=t_s[fi] if D else np.zeros(0), detection=det.detection,
                mp_label=det.mp_label, mp_score=det.mp_score, score=score,
                kp2d=det.kp2d.reshape(D, 42), joints_cam=det.joints_cam.reshape(D, 63), fit=fit,
                track_id=tid, cue_network=cue_n, cue_image=cue_i))
        stats = dict(n_frames=int(n), n_detections=int(D), undistorted=bool(det.undistorted),
                     image_width=det.image_size[0] if det.image_size else None,
                     image_height=det.image_size[1] if det.image_size else None,
                     fx=float(det.K[0, 0]) if det.K is not None else None)
        stats.update(self.model_stats())
        stats["finger_pose_convention"] = convention
        if D == 0:
            detections = detections_table(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
            stats.update(_rates(empty_tracks(), n))
            stats.update(_timing(det.timing, n, 0, time.perf_counter() - t0))
            return HandResult(empty_tracks(), detections, _json_safe(stats))

        ev = tracking.detection_evidence(det.kp2d, det.world, det.mp_label, det.mp_score,
                                         det.image_size[0])
        if self.mp_labels_mirrored is None:
            mp_sign, agreement = tracking.network_polarity(ev, self.weights)
        else:
            mp_sign, agreement = (-1.0 if self.mp_labels_mirrored else 1.0), float("nan")
        evidence = ev.total(self.weights, mp_sign)
        cue_n = self.weights.network * ev.network(mp_sign)
        cue_i = ev.image(self.weights)

        keep = tracking.suppress_duplicates(fi, det.kp2d, score, self.track_params.duplicate_rel,
                                            evidence=evidence)
        kept = np.flatnonzero(keep)
        tid = np.full(D, -1, np.int64)
        tid[kept] = tracking.assign_tracks(fi[kept], det.kp2d[kept], evidence[kept], self.track_params)
        # unconfirmed tracks (too few detections, and cues that do not clearly say which hand: a
        # spurious low-threshold detection) are dropped; a short track whose cues agree on a hand
        # (mean evidence >= 1: two of the three cues) is kept (the first or last frame of a clip)
        ids, counts = np.unique(tid[kept], return_counts=True)
        mean_ev = np.array([abs(evidence[kept][tid[kept] == t].mean()) for t in ids])
        short = ids[(counts < self.min_track_detections) & (mean_ev < 1.0)]
        if len(short) and len(short) < len(ids):
            drop = np.isin(tid, short)
            tid[drop] = -1
            kept = kept[~np.isin(tid[kept], short) & (tid[kept] >= 0)]
        # (when every track is that short, a very short video, nothing is dropped)
        n_unconfirmed = int(len(short)) if len(short) < len(ids) else 0
        labels = tracking.decide_handedness(tid[kept], fi[kept], evidence[kept])
        detections = detections_table(tid, cue_n, cue_i)
        cues = {t: tracking.cue_agreement(cue_n[kept][tid[kept] == t], cue_i[kept][tid[kept] == t])
                for t in labels}

        rows = {k: [] for k in ("frame_index", "hand", "score", "kp2d", "joints_cam", "track_id",
                                "handedness_conf", "interpolated", "finger_pose")}
        n_out = n_depth = 0
        sizes: dict[int, float] = {}
        win, k, floor = self.outlier
        for t, lab in labels.items():
            idx = kept[tid[kept] == t]
            idx = idx[np.argsort(fi[idx], kind="stable")]
            J, size = lifting.normalize_track_scale(det.joints_cam[idx], fit[idx],
                                                    self.lift_params.size_range, self.lift_params.hand_size_m)
            sizes[t] = size
            J, corrected = cleanup.correct_depth_outliers(J, win, k)
            n_depth += int(corrected.sum())
            inl = cleanup.reject_outliers(J[:, 0], win, k, floor)
            n_out += int((~inl).sum())
            idx, J = idx[inl], J[inl]
            if self.depth_window:
                J = cleanup.smooth_depth(J, fi[idx], self.depth_window)
            if self.track_skeleton and len(J) >= 5:
                # one skeleton per track (its median bones, at the track's size already), every
                # finger joint on its keypoint's ray; the palm stays as lifted (and depth-smoothed)
                bones = np.median(skeleton.bone_lengths(J), axis=0)
                lifted = all(str(f).split(":")[0] in lifting.LIFTED_FITS for f in fit[idx])
                J = (lifting.fit_to_rays(J, det.kp2d[idx], det.K, bones) if lifted and det.K is not None
                     else skeleton.with_bone_lengths(J, bones))
            fill = dict(joints_cam=J)
            if own_pose:
                fill["finger_pose"] = det.finger_pose[idx]
            if self.smooth_shape:
                fill = cleanup.smooth_shape(fill, fi[idx])
            fill.update(kp2d=det.kp2d[idx], score=score[idx])
            f2, arr, interp = cleanup.fill_gaps(fi[idx], fill, self.max_gap)
            m = len(f2)
            rows["frame_index"].append(f2)
            rows["hand"].append(np.full(m, lab.hand, object))
            rows["score"].append(arr["score"])
            rows["kp2d"].append(arr["kp2d"])
            rows["joints_cam"].append(arr["joints_cam"])
            rows["track_id"].append(np.full(m, t))
            rows["handedness_conf"].append(np.full(m, lab.conf))
            rows["interpolated"].append(interp)
            rows["finger_pose"].append(arr["finger_pose"] if own_pose
                                       else skeleton.finger_pose(arr["joints_cam"], lab.hand))
        cat = {k: np.concatenate(v) for k, v in rows.items()}
        # one person has one left and one right hand: if two tracks of one label share a frame
        # (only when the track labelling could not respect it), keep the better-scored row
        order = np.lexsort((-cat["score"], cat["interpolated"], cat["hand"].astype(str),
                            cat["frame_index"]))
        key = np.char.add(np.char.add(cat["frame_index"].astype(str), "|"), cat["hand"].astype(str))[order]
        first = np.ones(len(order), bool)
        first[1:] = key[1:] != key[:-1]
        sel = order[first]
        n_conflict = int((~first).sum())
        sel = sel[np.lexsort((cat["hand"][sel].astype(str), cat["frame_index"][sel]))]
        cat = {k: v[sel] for k, v in cat.items()}
        hands = cat["hand"].astype(str)
        J = cat["joints_cam"]
        tracks = _table(TRACKS_SCHEMA, dict(
            frame_index=cat["frame_index"], t_s=t_s[cat["frame_index"]], hand=hands.tolist(),
            score=cat["score"], kp2d=cat["kp2d"].reshape(-1, 42), joints_cam=J.reshape(-1, 63),
            wrist_rotvec_cam=skeleton.wrist_rotvec(J, hands),
            finger_pose=cat["finger_pose"].reshape(-1, 45),
            track_id=cat["track_id"], handedness_conf=cat["handedness_conf"],
            interpolated=cat["interpolated"]))

        final = np.array([labels[int(t)].hand == "right" if t >= 0 else False for t in tid])
        video = tracking.video_agreement(cues, {t: labels[t].n for t in labels})
        mp_right = (ev.mp * mp_sign) > 0
        has_mp = ev.mp != 0
        fits = {}
        for f in fit:
            key_ = "prior" if f.startswith("prior") else f
            fits[key_] = fits.get(key_, 0) + 1
        stats.update(
            n_tracks=len(labels), n_unconfirmed_tracks=n_unconfirmed, n_duplicates=int((~keep).sum()),
            n_depth_corrected=n_depth,
            n_outliers=n_out,
            n_interpolated=int(cat["interpolated"].sum()), n_label_conflicts=n_conflict,
            mp_labels_mirrored=bool(mp_sign < 0), mp_label_image_agreement=agreement,
            handedness_cue_agreement=video["agreement"],
            handedness_contested_fraction=video["contested_fraction"],
            handedness_cues={str(t): dict(hand=labels[t].hand, agreement=round(c.agreement, 3)
                                          if np.isfinite(c.agreement) else None,
                                          network_vote=round(c.network_vote, 2),
                                          image_vote=round(c.image_vote, 2), contested=c.contested)
                             for t, c in cues.items()},
            mp_label_final_agreement=float((mp_right[keep & has_mp] == final[keep & has_mp]).mean())
            if (keep & has_mp).any() else float("nan"),
            hand_size_m={str(t): round(v, 4) for t, v in sizes.items()},
            # the landmarker's own guess of the hand size (not used for depth; see lifting)
            network_hand_size_m=float(np.median(lifting.hand_scale(det.world))),
            handedness_conf_mean=float(np.mean(cat["handedness_conf"])) if len(sel) else float("nan"),
            **{f"fit_{k}": v / D for k, v in fits.items()},
            reproj_px_median=float(np.median(det.reproj_px[np.isfinite(det.reproj_px)]))
            if np.isfinite(det.reproj_px).any() else float("nan"),
        )
        stats.update(_rates(tracks, n))
        stats.update(_timing(det.timing, n, D, time.perf_counter() - t0))
        return HandResult(tracks, detections, _json_safe(stats))

    def track(self, proxy_path: str, frames: pa.Table, calib: dict,
              progress: Callable[[int, int], None] | None = None) -> HandResult:
        """Hand tracks of one proxy video (see the module doc)."""
        _warm_imports()
        return self.assemble(self.detect(proxy_path, frames, calib, progress))


@register("hands")
class MediaPipeHands(HandsBackend):
    """MediaPipe Tasks HandLandmarker + metric lifting + identity/handedness + clean-up (CPU)."""

    name = "mediapipe"
    version = "1.1"
    resources = Resources(gpu=0, cpu=1.0, memory_gib=2.0)
    description = ("MediaPipe HandLandmarker (full), lifted to metric 3D with the intrinsics and a "
                   "hand-size prior; tracked identities and voted handedness")
    model_variant = "full"  # bundle of ego_assets.lib.hands.model (EGO_ASSETS_HAND_MODEL overrides)

    def __init__(self, model_path: str | None = None, num_hands: int = 2,
                 min_detection_confidence: float = 0.3, min_presence_confidence: float = 0.3,
                 min_tracking_confidence: float = 0.5, border_pad: float = 0.0, tile_pass: str = "empty",
                 tile_every: int = 3, palm_every: int = 1, **kwargs):
        """``model_path``: a bundle (default: the verified ``model_variant`` bundle, see
        :func:`~ego_assets.lib.hands.model.resolve_model`); other keywords go to :class:`HandsBackend`.

        Detection thresholds are 0.3 (MediaPipe's default is 0.5), confirmed per track
        (``min_track_detections``): on real clips with the hand pushed partly out of the image (shifted
        by 15 % of the width), 0.3 finds the hand in 84 % of the frames instead of 26 % (stapler) at the
        same cost per frame. ``border_pad`` (share of the width) pads the frame left, right and below
        with black before detection, so that the landmarker can place a hand cut by the border; it
        helped there (87-90 %) but lost a frame of an unshifted clip and hands shifted by 25 %, so it
        is off by default (``benchmarks/hand_consistency.py`` measures it).

        ``tile_pass``: MediaPipe's palm detector sees the whole frame at 192 px, so small hands (a
        1080p headset view on a 640-px proxy) are missed. On frames where the video pass found no
        hand (``"empty"``, the default) or fewer than ``num_hands`` (``"missing"``), the landmarker
        also runs on square tiles of the frame (side = the shorter side, overlapping, covering the
        width), where hands are ~1.7x larger for the detector; tile detections that repeat one
        already found are dropped. Measured on real clips shrunk to 40 % in the frame: a one-hand
        clip 0 -> ~0.9 hands/frame; cost ~50 ms per tiled frame (two tiles), nothing on frames
        where the video pass found its hands. On a run of frames without hands only every
        ``tile_every``-th frame is tiled until the tiles find a hand (then every frame), which keeps
        a scene without hands at ~1/``tile_every`` of that cost. ``"off"`` disables it.

        ``palm_every``: MediaPipe's VIDEO mode runs its palm detector on every frame on which it
        tracks fewer than ``num_hands`` hands, so a frame with one hand costs the palm detector plus
        the landmark network (about as much as two tracked hands). With ``palm_every`` = k > 1, one
        hand is followed by a one-hand landmarker (no palm detector while it keeps the hand) and the
        palm detector looks for another hand on every k-th frame only (see :class:`_VideoPass`); 1 is
        MediaPipe's own policy. Measured (``benchmarks/hand_tracks.py``, one core): k = 4 takes a
        one-hand frame from ~29 to ~22 ms, two-hand and empty frames unchanged. It is not the default:
        a second hand is found up to k-1 frames later, and a lone hand's keypoints differ by a few
        pixels for a few frames after each hand-over (the one-hand landmarker's first region of
        interest comes from the palm detector), which moves ``benchmarks/hand_consistency.py``'s
        figures both ways (``--palm-every 4``).
        The model is resolved once here; a landmarker is created per video (~0.1 s), since VIDEO mode
        needs timestamps increasing within one video only."""
        super().__init__(**kwargs)
        self.model_path = resolve_model(model_path, self.model_variant)
        self.num_hands = num_hands
        self.conf = (min_detection_confidence, min_presence_confidence, min_tracking_confidence)
        self.border_pad = float(border_pad)
        if tile_pass not in ("empty", "missing", "off"):
            raise ValueError(f"tile_pass={tile_pass!r}: expected 'empty', 'missing' or 'off'")
        self.tile_pass = tile_pass
        self.tile_every = int(tile_every)
        if int(palm_every) < 1:
            raise ValueError(f"palm_every={palm_every!r}: expected an integer >= 1")
        self.palm_every = int(palm_every)

    def model_stats(self) -> dict:
        return model_info(self.model_path)

    def _landmarker(self, image_mode: bool = False, num_hands: int | None = None):
        from mediapipe.tasks.python import BaseOptions, vision

        opts = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE if image_mode else vision.RunningMode.VIDEO,
            num_hands=self.num_hands if num_hands is None else num_hands,
            min_hand_detection_confidence=self.conf[0], min_hand_presence_confidence=self.conf[1],
            min_tracking_confidence=self.conf[2])
        return vision.HandLandmarker.create_from_options(opts)

    # A video splits into chunks of frames run at once on the cores its step may use (lib.parallel: a
    # video running alone, not one of a backfill's), each chunk with its own landmarkers: MediaPipe's
    # inference releases the GIL. Each chunk but the first starts WARMUP_S early (those frames are run,
    # not kept) so that its landmarker already tracks the hands at the chunk's first frame, as the one
    # landmarker of an unsplit video would: a fresh landmarker's palm detector can take a second to find
    # the second hand (measured on the real pour clip: 0.8 s of warm-up left 3 one-hand frames where the
    # unsplit pass tracked two; 1.6 s, none). Chunks are at least MIN_CHUNK_S long, so the warm-up costs
    # at most ~13 % more frames.
    MIN_CHUNK_S: ClassVar[float] = 15.0
    WARMUP_S: ClassVar[float] = 2.0

    def detect(self, proxy_path: str, frames: pa.Table, calib: dict,
               progress: Callable[[int, int], None] | None = None) -> HandDetections:
        """Run the landmarker over the proxy and lift every hand, one row per detection. On more than
        one core (``lib.parallel.cores()``), contiguous chunks of frames run at once (see
        :attr:`MIN_CHUNK_S`); the first chunk's detections are exactly the unsplit ones, a later chunk's
        differ only where its warm-up did not reach the same tracking state."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from ego_assets.lib import parallel

        t_s = frame_times(frames)
        n = len(t_s)
        span = float(t_s[-1] - t_s[0]) if n else 0.0
        k = max(1, min(parallel.cores(), int(span // self.MIN_CHUNK_S)))
        bounds = np.linspace(0, n, k + 1).round().astype(int).tolist()
        lock, done = threading.Lock(), [0]

        def report(c: int) -> None:
            if progress is None:
                return
            with lock:
                done[0] += c
                if done[0] % 25 == 0 or done[0] == n:
                    progress(done[0], n)

        if k == 1:
            parts = [self._detect_range(proxy_path, t_s, n, 0, n, calib, report)]
        else:
            with ThreadPoolExecutor(k, thread_name_prefix="hands") as pool:
                parts = list(pool.map(lambda a: self._detect_range(proxy_path, t_s, n, *a, calib, report),
                                      zip(bounds[:-1], bounds[1:])))
        out = {key: [x for part in parts for x in part["out"][key]] for key in parts[0]["out"]}
        timing: dict = {}
        for part in parts:
            for key, v in part["timing"].items():
                timing[key] = timing.get(key, 0) + v
        timing["chunks"] = k
        first = parts[0]
        return HandDetections(self.name, **out, t_s=t_s, image_size=first["size"], K=first["K"],
                              undistorted=first["undistorted"], timing=timing)

    def _detect_range(self, proxy_path: str, t_s: np.ndarray, n: int, start: int, stop: int, calib: dict,
                      report: Callable[[int], None]) -> dict:
        """The detections of frames ``start``..``stop - 1`` (of ``n``, at times ``t_s``) with landmarkers
        of their own, run from ``WARMUP_S`` before ``start`` (those frames' hands are not kept)."""
        from ego_assets.lib.video import iter_frames

        ts_ms = _timestamps_ms(t_s)
        first = int(np.searchsorted(t_s, t_s[start] - self.WARMUP_S - 1e-9)) if start > 0 else 0
        out = {key: [] for key in ("frame_index", "detection", "mp_label", "mp_score", "kp2d", "world",
                                   "joints_cam", "fit", "reproj_px")}
        timing = dict(decode_s=0.0, landmarker_s=0.0, lifting_s=0.0, tile_s=0.0)
        K = undistort = None
        size = None
        count = 0
        vp = _VideoPass(self._landmarker, self.num_hands, self.palm_every)
        n_tiled, tile_hit, last_tiled = 0, False, -(10 ** 9)
        try:
            t_dec = time.perf_counter()
            # the last chunk reads to the end: a proxy with more frames than the table is an error. A
            # later chunk of a proxy not kept decoded decodes (without converting) the frames before it,
            # ~1-2 ms a frame at 640 px against ~25 ms of landmarker, and keeps none of them
            for i, _, img in iter_frames(proxy_path, first, stop if stop < n else None, cache=start == 0):
                if i >= n:
                    raise HandTrackingInputError(f"proxy {proxy_path}: has more frames than the frames "
                                                 f"table ({n})")
                if K is None:
                    size = (img.shape[1], img.shape[0])
                    K, undistort = proxy_camera(calib, *size)
                if undistort is not None:
                    img = undistort(img)
                pad = int(round(self.border_pad * size[0]))
                if pad > 0:
                    img = np.pad(img, ((0, pad), (pad, pad), (0, 0)))
                t0 = time.perf_counter()
                timing["decode_s"] += t0 - t_dec
                found = vp(img, int(ts_ms[i]), pad)
                t_tile = time.perf_counter()
                want = self.tile_pass == "empty" and not found or self.tile_pass == "missing" and \
                    len(found) < self.num_hands
                # on a run of frames without hands, tile every `tile_every`-th frame until tiles find one
                # (then every frame): a scene without hands costs a third, a small hand is kept
                if want and (tile_hit or i - last_tiled >= self.tile_every):
                    more = _tile_detections(vp.image_landmarker(), img[: size[1], pad: pad + size[0]], found)
                    found += more
                    tile_hit, last_tiled = bool(more), i
                    n_tiled += i >= start
                t1 = time.perf_counter()
                timing["landmarker_s"] += t1 - t0
                timing["tile_s"] += t1 - t_tile
                if i >= start:  # not a warm-up frame
                    for d, (hd, kp, w) in enumerate(found):
                        if not (np.isfinite(kp).all() and np.isfinite(w).all()):
                            continue
                        lift = lifting.lift_hand(kp, w, K, self.lift_params)
                        out["frame_index"].append(i)
                        out["detection"].append(d)
                        out["mp_label"].append(hd[0].category_name if hd else "")
                        out["mp_score"].append(float(hd[0].score) if hd else 0.5)
                        out["kp2d"].append(kp)
                        out["world"].append(w)
                        out["joints_cam"].append(lift.joints_cam)
                        out["fit"].append(lift.fit)
                        out["reproj_px"].append(lift.reproj_px)
                    count += 1
                    report(1)
                timing["lifting_s"] += time.perf_counter() - t1
                t_dec = time.perf_counter()
        finally:
            vp.close()
        timing["tiled_frames"] = n_tiled
        timing.update(vp.counts)
        if count != stop - start:
            raise HandTrackingInputError(f"proxy {proxy_path}: decoded {start + count} frames, the frames "
                                         f"table has {n}")
        return dict(out=out, timing=timing, size=size, K=K, undistorted=undistort is not None)


@register("hands")
class MediaPipeHandsLite(MediaPipeHands):
    """The same pipeline with MediaPipe's lite landmark network: ~40 % less CPU per hand, for when
    throughput matters more than the last bit of keypoint accuracy."""

    name = "mediapipe_lite"
    version = "1.1"
    description = "MediaPipe HandLandmarker (lite landmark network); otherwise as 'mediapipe'"
    model_variant = "lite"


def _tile_detections(lm, img: np.ndarray, found: list) -> list:
    """(handedness, kp2d, world) of hands the IMAGE-mode landmarker ``lm`` finds in square tiles of
    ``img`` (side = its shorter side, evenly spaced over the longer one, overlapping), in the frame's
    pixels, leaving out any that repeats a hand in ``found`` or in an earlier tile (keypoints within
    half a hand size, or keypoint boxes overlapping by more than half)."""
    import mediapipe as mp

    h, w = img.shape[:2]
    side = min(h, w)
    n_t = int(np.ceil(max(h, w) / side)) + (1 if max(h, w) > side else 0)
    starts = np.linspace(0, max(h, w) - side, max(n_t, 1)).round().astype(int) if max(h, w) > side else [0]
    out: list = []
    for s0 in starts:
        tile = img[:, s0:s0 + side] if w >= h else img[s0:s0 + side]
        r = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(tile)))
        for hd, lms, wlms in zip(r.handedness, r.hand_landmarks, r.hand_world_landmarks):
            kp = np.array([[p.x * side - 0.5, p.y * side - 0.5] for p in lms])
            kp += [s0, 0] if w >= h else [0, s0]
            if not any(_repeats(kp, k2) for _, k2, _ in found + out):
                out.append((hd, kp, np.array([[p.x, p.y, p.z] for p in wlms])))
    return out


def _repeats(kp: np.ndarray, other: np.ndarray) -> bool:
    """Whether the 2D hands ``kp`` and ``other`` (21, 2) are one hand: keypoints within half a hand
    size on average, or keypoint boxes overlapping by more than half."""
    from ego_assets.lib.hands.tracking import box_overlap, hand_size_px

    d = np.linalg.norm(kp - other, axis=-1).mean()
    return bool(d < 0.5 * max(min(hand_size_px(kp), hand_size_px(other)), 1.0) or box_overlap(kp, other) > 0.5)


def _hands(res, wh: tuple[int, int], pad: int = 0) -> list:
    """(handedness, kp2d in pixels, world) of a landmarker result on an image of size ``wh``, whose
    content starts ``pad`` pixels from the left. MediaPipe's normalized coordinates span the image
    edges [0, W]; OpenCV's pixel centres are integers, so the edge is at -0.5."""
    return [(hd, np.array([[p.x * wh[0] - 0.5 - pad, p.y * wh[1] - 0.5] for p in lms]),
             np.array([[p.x, p.y, p.z] for p in wlms]))
            for hd, lms, wlms in zip(res.handedness, res.hand_landmarks, res.hand_world_landmarks)]


class _VideoPass:
    """The landmarker's pass over the frames of one video: ``vp(img, timestamp_ms, pad)`` returns the
    frame's hands as :func:`_hands` does.

    With ``every`` = 1 this is MediaPipe's VIDEO mode with ``num_hands``: it follows the hands it
    tracks and runs the palm detector on every frame with fewer than ``num_hands`` of them. With
    ``every`` = k > 1 (and ``num_hands`` > 1), after ``settle`` frames with exactly one hand, a
    one-hand VIDEO landmarker takes over: it follows the hand with the landmark network alone, and
    runs its palm detector only while it has no hand. The palm detector of a stateless IMAGE-mode
    landmarker looks for another hand on every k-th frame it followed its hand, and for the frame's
    hands where it lost it (or jumped to another). A new
    hand found on two frames in a row is a second hand: the ``num_hands`` landmarker leads again,
    restarted (the hands it tracked are stale: a VIDEO landmarker cannot be told to forget them; ~40 ms
    CPU per restart, as per hand-over), and the one-hand landmarker keeps following its hand alongside
    until the ``num_hands`` landmarker has it too (a hand it can follow but a fresh palm detector may
    miss, e.g. cut by the border). ``counts``: frames the one-hand landmarker led, palm checks, restarts."""

    def __init__(self, make: Callable, num_hands: int, every: int = 1, settle: int = 2):
        self.make, self.num_hands, self.every, self.settle = make, num_hands, every, settle
        self.full = make()
        self.one = self.look = None
        self.ones = 0  # consecutive frames with one hand while the num_hands landmarker leads
        self.single = 0  # frames the one-hand landmarker followed its hand (0: it does not lead)
        self.helper = False  # the one-hand landmarker follows a hand alongside the num_hands one
        self.full_stale = False  # the num_hands landmarker skipped frames since its last call
        self.last: np.ndarray | None = None  # the one-hand landmarker's hand on the previous frame
        self.pending: list | None = None  # keypoints of new hands a palm check found on the previous frame
        self.counts = dict(single_hand_frames=0, palm_checks=0, landmarker_restarts=0)

    def _palms(self, image, wh, pad) -> list:
        """The hands the IMAGE-mode landmarker (the palm detector, then the landmark network on each
        palm) finds in ``image``. (Hiding the followed hand to spare its landmark pass changes what the
        palm detector finds elsewhere in the frame: measured, a hand found with the hand hidden that
        is not found without.)"""
        self.counts["palm_checks"] += 1
        return _hands(self.image_landmarker().detect(image), wh, pad)

    def image_landmarker(self):
        """The IMAGE-mode landmarker (made on first use), shared with the tile pass."""
        if self.look is None:
            self.look = self.make(image_mode=True)
        return self.look

    def _follow(self, image, ts_ms: int, wh, pad) -> tuple[list, bool]:
        """(the one-hand landmarker's hand on this frame, or [] where it lost the hand it followed or
        jumped to another; whether it jumped)."""
        hands = _hands(self.one.detect_for_video(image, ts_ms), wh, pad)
        jumped = len(hands) == 1 and self.last is not None and not _repeats(hands[0][1], self.last)
        return ([] if jumped else hands), jumped

    def __call__(self, img: np.ndarray, ts_ms: int, pad: int = 0) -> list:
        """The hands of ``img`` (HxWx3 RGB, content from column ``pad``) at ``ts_ms``."""
        import mediapipe as mp

        wh = (img.shape[1], img.shape[0])
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img))
        if self.single:
            self.counts["single_hand_frames"] += 1
            self.full_stale = True
            hands, jumped = self._follow(image, ts_ms, wh, pad)
            if hands:
                self.single += 1
                self.last = hands[0][1]
                if self.single % self.every == 0 or self.pending is not None:
                    new = [h for h in self._palms(image, wh, pad) if not _repeats(h[1], self.last)]
                    seen = self.pending is not None and any(_repeats(h[1], q) for h in new for q in self.pending)
                    self.pending = [h[1] for h in new] or None
                    if seen:  # a second hand: the num_hands landmarker leads from the next frame
                        self.single, self.helper, self.pending = 0, True, None
                    return hands + new
                return hands
            self.pending = None
            if self.last is None:
                return hands  # no hand, and its palm detector ran on this frame: nothing to find
            # lost the hand it followed (where the num_hands landmarker's palm detector would have
            # found it again on this frame), or jumped to another: the palm detector on this frame
            hands = self._palms(image, wh, pad)
            if len(hands) > 1 or jumped:  # (it follows the other hand now: the num_hands landmarker)
                self.single = 0
            self.last = hands[0][1] if len(hands) == 1 else None
            return hands
        if self.full_stale:
            self.full.close()
            self.full = self.make()
            self.full_stale = False
            self.counts["landmarker_restarts"] += 1
        hands = _hands(self.full.detect_for_video(image, ts_ms), wh, pad)
        from_helper = False
        if self.helper:
            mine = self._follow(image, ts_ms, wh, pad)[0]
            self.helper = bool(mine) and not any(_repeats(h[1], mine[0][1]) for h in hands)
            if self.helper:
                self.last, from_helper = mine[0][1], not hands
                hands = hands + mine
        self.ones = self.ones + 1 if len(hands) == 1 else 0
        if self.every > 1 and self.num_hands > 1 and self.ones >= self.settle:
            if not from_helper:  # a fresh one: the hand it followed last is stale
                if self.one is not None:
                    self.one.close()
                    self.counts["landmarker_restarts"] += 1
                self.one = self.make(num_hands=1)
            self.single, self.ones, self.helper, self.last = 1, 0, False, hands[0][1]
        return hands

    def close(self) -> None:
        for lm in (self.full, self.one, self.look):
            if lm is not None:
                lm.close()


def _warm_imports() -> None:
    """Import what the assembly uses before it is timed (the fps in the stats is about the work, not
    about a first import, which can take seconds where bytecode is not cached)."""
    import scipy.ndimage  # noqa: F401
    import scipy.optimize  # noqa: F401
    import scipy.spatial.transform  # noqa: F401


def _json_safe(d: dict) -> dict:
    """NaN -> None, numpy scalars -> Python, so the stats go straight into JSON / UI metadata."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _json_safe(v)
        elif isinstance(v, (np.floating, float)):
            v = None if not np.isfinite(v) else float(v)
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, np.bool_):
            v = bool(v)
        out[k] = v
    return out


def _rates(tracks: pa.Table, n: int) -> dict:
    if n == 0:
        return dict(detection_rate=float("nan"), left_rate=float("nan"), right_rate=float("nan"),
                    both_hands_rate=float("nan"))
    interp = np.asarray(tracks.column("interpolated").to_pylist(), bool)
    fi = tracks.column("frame_index").to_numpy()[~interp]
    hand = np.asarray(tracks.column("hand").to_pylist(), dtype=object)[~interp]
    left = set(fi[hand == "left"].tolist())
    right = set(fi[hand == "right"].tolist())
    return dict(detection_rate=len(left | right) / n, left_rate=len(left) / n, right_rate=len(right) / n,
                both_hands_rate=len(left & right) / n)


def _timing(t: dict, n: int, d: int, assemble_s: float) -> dict:
    wall = t["decode_s"] + t["landmarker_s"] + t["lifting_s"] + assemble_s
    # decode includes the rectification of distorted frames; none of it counts imports or model loading
    # (but the landmarker includes the restarts of the palm_every > 1 policy)
    counts = {k: int(t[k]) for k in ("single_hand_frames", "palm_checks", "landmarker_restarts", "chunks")
              if k in t}
    return dict(tiled_frames=int(t.get("tiled_frames", 0)), **counts,
                tile_ms_per_frame=1000 * t.get("tile_s", 0.0) / max(n, 1),
                fps=n / wall if wall > 0 else float("nan"),
                decode_ms_per_frame=1000 * t["decode_s"] / max(n, 1),
                landmarker_ms_per_frame=1000 * t["landmarker_s"] / max(n, 1),
                lifting_ms_per_hand=1000 * t["lifting_s"] / max(d, 1),
                assemble_ms=1000 * assemble_s, processing_s=wall)
