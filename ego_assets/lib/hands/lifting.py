"""Lifting one detected hand to metric 3D in the camera frame.

MediaPipe gives two things per hand: 2D keypoints in the image, and "world" landmarks, a metric 3D
hand shape around the hand's centre. Its proportions and pose are used; its *scale* is not: it is the
network's population guess (median wrist->middle MCP 0.090 m on the real clips, nearly constant
whoever's hand it is), and depth is proportional to the size assumed, so a 10 % too large size puts
every hand 10 % too far. The shape is rescaled to the hand-size prior
(:data:`~ego_assets.lib.hands.skeleton.HAND_SIZE_PRIOR_M`, adult joint-centre anthropometry, one
size for every frame of a track) before it is placed. Placing a rigid shape in the camera is a PnP
problem: find R, t such that K (R S + t) projects onto the keypoints; SQPnP (globally optimal, any
number of points) does that in ~0.2 ms.

Expected depth error, and where it comes from: (1) the person's hand size against the prior: adult
SD ~5 %, a constant bias per person (~2.5 cm at 50 cm); (2) per-frame keypoint and shape noise:
a few % per frame, reduced by the per-track temporal smoothing of depth in :mod:`.cleanup`;
(3) partly visible hands (cut by the border): fewer reliable keypoints, more weight on the shape.
Tested with exact and noisy projections of hands of known size and depth (no bias when the prior
is the true size, and a depth error proportional to a wrong size).

The fit is *weak* when the shape and the keypoints disagree: the network's depth guesses can be far
off (the test clip has frames where the wrist is put 13 cm behind the knuckles while pouring), which
drags the PnP depth to implausible values. Then the 2D palm size takes over: the shape
keeps the PnP rotation, and is placed at the depth at which the
template palm matches the 2D palm size (:func:`palm_depth_from_2d`). ``fit`` records what happened:

* ``pnp``: the network's shape (at the prior size) fitted;
* ``pnp:size_prior``: the same, but the network's own size was implausible (a badly deformed shape);
* ``prior:<reasons>``: weak fit placed by the prior; reasons among ``reproj`` (reprojection error
  large for the hand's size), ``inliers`` (too few keypoints explained), ``depth`` (depth outside the
  plausible range, or far from the 2D palm size estimate), ``solver`` (PnP failed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ego_assets.lib.hands.skeleton import HAND_SIZE_PRIOR_M, PALM_JOINTS, TEMPLATE_SIZE_M, template_hand

# Palm segments that change length little with finger articulation; in any orientation of the
# (nearly planar) palm one of these directions is close to parallel to the image plane.
PALM_SEGMENTS = ((0, 5), (0, 9), (0, 13), (0, 17), (5, 17), (5, 13), (9, 17), (1, 5), (0, 1), (1, 13),
                 (1, 17))
_T = template_hand()
_SEG_A = np.array([a for a, _ in PALM_SEGMENTS])
_SEG_B = np.array([b for _, b in PALM_SEGMENTS])
PALM_SEGMENT_LENGTHS = np.linalg.norm(_T[_SEG_A] - _T[_SEG_B], axis=1)
_PALM = list(PALM_JOINTS)


@dataclass(frozen=True)
class LiftParams:
    z_range: tuple[float, float] = (0.08, 1.5)  # plausible hand depth for a head-worn camera (m)
    depth_ratio_range: tuple[float, float] = (0.6, 1.6)  # PnP depth / 2D-palm-size depth
    max_rel_reproj: float = 0.35  # RMS reprojection error / RMS keypoint radius
    min_reproj_px: float = 3.0  # below this error a fit is never weak (keypoint noise)
    inlier_rel: float = 0.35  # a keypoint is explained when its error < this x RMS radius
    min_inliers: int = 12
    size_range: tuple[float, float] = (0.06, 0.13)  # plausible network hand size (m)
    hand_size_m: float = HAND_SIZE_PRIOR_M


@dataclass
class Lift:
    joints_cam: np.ndarray  # (21, 3) metres, camera frame
    fit: str
    reproj_px: float  # RMS reprojection error of the rigid fit (pixels)
    n_inliers: int
    depth_m: float  # depth of the palm centre


def _project(P: np.ndarray, K: np.ndarray) -> np.ndarray:
    z = np.maximum(P[:, 2:3], 1e-6)
    return (P[:, :2] / z) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def _normalized(kp2d: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (kp2d - np.array([K[0, 2], K[1, 2]])) / np.array([K[0, 0], K[1, 1]])


def palm_depth_from_2d(kp2d: np.ndarray, K: np.ndarray, hand_size_m: float = HAND_SIZE_PRIOR_M) -> float:
    """Depth (m) of the palm from its image size and the hand-size prior: each palm segment of known
    prior length L and normalized image length l gives z <= L / l (foreshortening only shortens l);
    the second smallest estimate is used, robust to one misplaced keypoint."""
    x = _normalized(np.asarray(kp2d, float), K)
    L = PALM_SEGMENT_LENGTHS * (hand_size_m / TEMPLATE_SIZE_M)
    d = x[_SEG_A] - x[_SEG_B]
    l = np.sqrt((d * d).sum(1))
    z = np.partition(L / np.maximum(l, 1e-9), 1)
    return float(z[1])


def hand_scale(joints: np.ndarray) -> np.ndarray:
    """Size of hand(s) (..., 21, D) as the wrist -> middle MCP length of the template hand that best
    matches its palm: the template's size x the median ratio of the palm segments to the template's.
    Steadier than one bone, since the landmarker's bones jitter independently."""
    j = np.asarray(joints, float)
    d = j[..., _SEG_A, :] - j[..., _SEG_B, :]
    ratio = np.sqrt((d * d).sum(-1)) / PALM_SEGMENT_LENGTHS
    return TEMPLATE_SIZE_M * np.median(ratio, axis=-1)


LIFTED_FITS = ("pnp", "pnp:size_prior", "prior")  # fits made by lift_hand (the prefix of ``fit``)


def normalize_track_scale(joints_cam: np.ndarray, fits, size_range: tuple[float, float] = LiftParams.size_range,
                          hand_size_m: float = HAND_SIZE_PRIOR_M) -> tuple[np.ndarray, float]:
    """Give every detection of one track the same hand size, by scaling its joints about the camera
    centre (which leaves their projection unchanged). One person's hand does not change size. Joints
    lifted here (``fit`` from :func:`lift_hand`) get ``hand_size_m``, the prior; joints a backend
    measured itself (any other ``fit``, e.g. a MANO model with its own shape) keep the median of
    their own sizes, clipped to ``size_range``. Returns the joints and the size (m)."""
    J = np.asarray(joints_cam, float)
    s = hand_scale(J)
    own = np.array([str(f).split(":")[0] not in LIFTED_FITS for f in fits], bool)
    if len(J) and own.sum() * 2 > len(J):
        size = float(np.clip(np.median(s[own]), *size_range))
    else:
        size = float(hand_size_m)
    return J * (size / np.maximum(s, 1e-6))[:, None, None], size


def _place_by_prior(S: np.ndarray, R: np.ndarray, kp2d: np.ndarray, K: np.ndarray,
                    z_palm: float) -> np.ndarray:
    """Rotate the shape by R and put its palm centre on the ray of the 2D palm centre at z_palm."""
    Sc = S - S[_PALM].mean(0)
    c2 = kp2d[_PALM].mean(0)
    ray = np.array([(c2[0] - K[0, 2]) / K[0, 0], (c2[1] - K[1, 2]) / K[1, 1], 1.0])
    return Sc @ R.T + z_palm * ray


def lift_hand(kp2d: np.ndarray, world: np.ndarray, K: np.ndarray, params: LiftParams = LiftParams()) -> Lift:
    """Place the metric hand shape ``world`` (21x3, any origin) in the camera frame so that it projects
    onto ``kp2d`` (21x2 pixels of an undistorted image with intrinsics ``K``)."""
    import cv2

    kp2d = np.asarray(kp2d, np.float64).reshape(21, 2)
    S = np.asarray(world, np.float64).reshape(21, 3)
    K = np.asarray(K, np.float64)
    if not (np.isfinite(kp2d).all() and np.isfinite(S).all()):
        raise ValueError("lift_hand: keypoints or world landmarks contain non-finite values")
    p = params
    radius = float(np.sqrt(((kp2d - kp2d.mean(0)) ** 2).sum(1).mean()))
    size = float(hand_scale(S))
    size_ok = p.size_range[0] <= size <= p.size_range[1]
    S = S * (p.hand_size_m / max(size, 1e-6))  # the network's proportions at the prior's size
    S = S - S.mean(0)

    reasons = []
    R = np.eye(3)  # MediaPipe's world axes are close to the camera's: the fallback rotation
    joints = None
    try:
        ok, rv, tv = cv2.solvePnP(S, kp2d, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if ok:  # no LM refinement: it costs 4x SQPnP and moves the wrist by < 1 mm here
            R = cv2.Rodrigues(rv)[0]
            joints = S @ R.T + tv.reshape(1, 3)
    except cv2.error:
        ok = False
    if joints is None or not np.isfinite(joints).all():
        reasons.append("solver")
        err = np.full(21, np.inf)
    else:
        err = np.linalg.norm(_project(joints, K) - kp2d, axis=1)
    rms = float(np.sqrt((err ** 2).mean())) if np.isfinite(err).all() else float("inf")
    n_in = int((err <= max(p.min_reproj_px, p.inlier_rel * radius)).sum())
    z_2d = palm_depth_from_2d(kp2d, K, p.hand_size_m)
    if joints is not None and not reasons:
        if rms > max(p.min_reproj_px, p.max_rel_reproj * radius):
            reasons.append("reproj")
        if n_in < p.min_inliers:
            reasons.append("inliers")
        z = float(joints[_PALM, 2].mean())
        zmin = float(joints[:, 2].min())
        ratio = z / z_2d
        if not (p.z_range[0] <= z <= p.z_range[1]) or zmin <= 0.01 or not (
                p.depth_ratio_range[0] <= ratio <= p.depth_ratio_range[1]):
            reasons.append("depth")
    if not reasons:
        fit = "pnp" if size_ok else "pnp:size_prior"
        return Lift(joints, fit, rms, n_in, float(joints[_PALM, 2].mean()))
    joints = _place_by_prior(S, R, kp2d, K, z_2d)
    return Lift(joints, "prior:" + "+".join(reasons), rms, n_in, z_2d)


def fit_to_rays(joints_cam: np.ndarray, kp2d: np.ndarray, K: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Finger joints (N, 21, 3) that lie on the rays of their 2D keypoints (N, 21, 2) and have the
    bone lengths ``lengths`` (20, BONES order), the lifted joints ``joints_cam`` deciding what 2D
    alone cannot: for each bone whether its child is nearer or farther than its parent. The palm
    (the wrist and the bases of the five chains: thumb CMC, the four MCPs) stays as lifted: its
    bones lie nearly in the image plane for a head-worn view, where the near/far choice is
    ill-conditioned, and the palm carries the hand's position and rotation, which the rigid fit of the
    whole shape gives more steadily (measured: palm-depth jitter 3x with the palm on the rays).

    The landmarker's 2D keypoints are its most accurate output; its 3D shape, placed rigidly, misses
    them by several pixels (its fingers' depths and bends are guesses). Walking down each finger
    from its base, the child joint is the point of its keypoint's ray at the bone's length from the
    (already placed) parent: of the two such points, the one nearer the lifted joint; when the ray
    passes farther than the bone's length (a too-short bone or a keypoint error), the point at the
    bone's length towards the ray's closest point. So a track keeps one finger skeleton and every
    finger joint projects onto its keypoint."""
    J = np.asarray(joints_cam, float)
    single = J.ndim == 2
    J = J[None] if single else J
    kp = np.asarray(kp2d, float).reshape(J.shape[0], 21, 2)
    Kinv = np.linalg.inv(np.asarray(K, float))
    rays = np.concatenate([kp, np.ones(kp.shape[:2] + (1,))], -1) @ Kinv.T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    out = J.copy()
    from ego_assets.lib.hands.skeleton import BONES

    L = np.asarray(lengths, float)
    for k, (a, c) in enumerate(BONES):
        if a == 0:  # a palm bone: as lifted
            continue
        r = rays[:, c]
        Pa = out[:, a]
        b = (r * Pa).sum(-1)
        disc = b * b - (Pa * Pa).sum(-1) + L[k] ** 2
        root = np.sqrt(np.maximum(disc, 0.0))
        s1, s2 = b - root, b + root
        c1, c2 = s1[:, None] * r, s2[:, None] * r
        pick = np.linalg.norm(c1 - J[:, c], axis=-1) <= np.linalg.norm(c2 - J[:, c], axis=-1)
        child = np.where(pick[:, None], c1, c2)
        miss = disc < 0
        if miss.any():
            d = b[miss, None] * r[miss] - Pa[miss]
            child[miss] = Pa[miss] + L[k] * d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
        out[:, c] = child
    return out[0] if single else out
