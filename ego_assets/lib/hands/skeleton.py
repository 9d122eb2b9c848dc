"""The 21-joint hand skeleton (MediaPipe order) and the quantities derived from joint positions:
the wrist frame, the finger joint rotations in MANO order, chirality cues and a template hand.

All functions take stacked arrays (``(N, 21, 3)`` or a single ``(21, 3)``) and are vectorised: they
run once per track, not once per joint.

Wrist (hand) frame, expressed in the camera frame by ``wrist_rotvec_cam``:

* origin at the wrist (joint 0);
* ``x`` from the wrist towards the knuckles: the bisector of wrist->index MCP (5) and wrist->pinky
  MCP (17);
* ``z`` the palm normal, pointing out of the palm (the volar side), for both hands: it is
  ``(index_mcp - wrist) x (pinky_mcp - wrist)`` for a right hand and the opposite for a left hand;
* ``y = z x x``: a right-handed frame for both hands, so ``y`` points towards the little finger on a
  right hand and towards the thumb on a left hand.

Finger pose (``finger_pose``, 15 x axis-angle, MANO joint order index1-3, middle1-3, pinky1-3,
ring1-3, thumb1-3): each finger is a chain base -> joint1 -> joint2 -> joint3 -> tip (for the thumb
the base is the wrist and the joints are CMC, MCP, IP). The rest direction of the whole chain is its
"metacarpal" direction (wrist -> MCP, for the thumb wrist -> CMC); a straight finger continuing its
metacarpal in the palm is the flat hand, pose zero. Bone k's local rotation is the *swing* (shortest
rotation) that takes the rest direction to bone k's direction expressed in the frame of bone k-1
(bone 0 being the wrist frame), and the frames are chained, so each vector is the rotation of a bone
relative to its parent, in axes that coincide with the wrist frame at rest. Joint positions carry no
twist about a bone, so the twist is zero by construction. Flexion (towards the palm) is a rotation about
(rest direction x ``z``), which is close to ``-y`` for the four fingers, for both hands; abduction is
about ``z``. Mirroring a pose between hands keeps the ``y`` component and flips ``x`` and ``z``
(axis-angle vectors are pseudo-vectors). To feed MANO, conjugate by the fixed rotation between this
wrist frame and MANO's canonical axes.
"""

from __future__ import annotations

import numpy as np

N_JOINTS = 21
WRIST = 0
THUMB_CMC, THUMB_MCP, THUMB_IP, THUMB_TIP = 1, 2, 3, 4
INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP = 5, 9, 13, 17
FINGER_CHAINS: dict[str, tuple[int, int, int, int, int]] = {
    "thumb": (0, 1, 2, 3, 4),
    "index": (0, 5, 6, 7, 8),
    "middle": (0, 9, 10, 11, 12),
    "ring": (0, 13, 14, 15, 16),
    "pinky": (0, 17, 18, 19, 20),
}
MANO_FINGER_ORDER = ("index", "middle", "pinky", "ring", "thumb")
MANO_JOINT_NAMES = tuple(f"{f}{k}" for f in MANO_FINGER_ORDER for k in (1, 2, 3))
# parent -> child, the 20 bones of the kinematic tree
BONES: tuple[tuple[int, int], ...] = tuple(
    (c[i], c[i + 1]) for c in FINGER_CHAINS.values() for i in range(4))
# bones across the palm, drawn but not part of the tree
PALM_LINKS: tuple[tuple[int, int], ...] = ((5, 9), (9, 13), (13, 17))
PALM_JOINTS = (0, 5, 9, 13, 17)

HAND_SIZE_PRIOR_M = 0.082
"""The hand-size prior of the lifting: the adult wrist -> middle-finger MCP distance between *joint
centres* (metres), what a 3D ground truth of joints (MANO, a headset's hand tracker) measures.

Where the number comes from: adult hand length (wrist crease to the tip of the middle finger) is
about 19.0 cm for men and 17.5 cm for women (50th percentiles of the usual anthropometric surveys),
18.2 cm for a mixed population; the middle finger from the MCP joint centre to its tip is about 55 %
of that (the MCP joint lies ~2 cm proximal to the finger's base crease), which leaves ~8.2 cm from
the wrist to the MCP joint centre. MediaPipe's own world landmarks put it at 9.0 cm (median on the
real clips): that is the network's population guess in its own landmark convention (its MCP
landmarks sit nearer the knuckles' surface), not a measurement of the person, and using it placed
every hand ~10 % too far (+5 cm median on headset footage with ground truth, too far in 8 of 8
clips). The spread of adult hand size (SD ~5 %) remains as a per-person depth error of ~5 % (about
2.5 cm at 50 cm), constant along a track."""

FINGER_POSE_CONVENTION = "ego_assets/swing-wrist-frame/v1"
"""Name of the ``finger_pose`` convention computed here (see the module doc): 15 axis-angle vectors in
MANO's joint order, each the swing of a bone relative to its parent bone in axes that coincide with
this module's wrist frame at rest; no twist. It is *not* MANO's pose parameters (different canonical
axes, no twist, no PCA); a backend that regresses MANO itself supplies those and names them
:data:`MANO_POSE_CONVENTION`."""
MANO_POSE_CONVENTION = "mano/axis-angle"


def _unit(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), eps)


def _stack(j: np.ndarray) -> tuple[np.ndarray, bool]:
    j = np.asarray(j, dtype=np.float64)
    if j.ndim == 2:
        return j[None], True
    if j.ndim != 3 or j.shape[1] != N_JOINTS:
        raise ValueError(f"joints of shape {j.shape}: expected (21, D) or (N, 21, D)")
    return j, False


def hand_sign(hand) -> np.ndarray:
    """+1 for 'right', -1 for 'left' (array-valued for a sequence of labels)."""
    h = np.asarray(hand)
    if not np.isin(h, ("left", "right")).all():
        raise ValueError(f"hand labels {np.unique(h).tolist()}: expected 'left' or 'right'")
    return np.where(h == "right", 1.0, -1.0)


def wrist_frame(joints: np.ndarray, hand) -> np.ndarray:
    """Rotation matrices (N, 3, 3) whose columns are the wrist frame axes (x, y, z, see module doc)
    in the joints' frame; ``hand`` is one label or one per row."""
    j, single = _stack(joints)
    s = np.broadcast_to(hand_sign(hand), (j.shape[0],))
    u = j[:, INDEX_MCP] - j[:, WRIST]
    v = j[:, PINKY_MCP] - j[:, WRIST]
    z = _unit(np.cross(u, v)) * s[:, None]
    x = u + v
    x = _unit(x - (x * z).sum(-1, keepdims=True) * z)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=-1)
    return R[0] if single else R


def wrist_rotvec(joints: np.ndarray, hand) -> np.ndarray:
    """Axis-angle (N, 3) of the wrist frame in the joints' frame (the camera frame for joints_cam)."""
    from scipy.spatial.transform import Rotation

    R = wrist_frame(joints, hand)
    return Rotation.from_matrix(R).as_rotvec()


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation vectors (N, 3) of the shortest rotations taking unit vectors a to unit vectors b."""
    c = np.cross(a, b)
    sn = np.linalg.norm(c, axis=-1)
    cs = (a * b).sum(-1)
    ang = np.arctan2(sn, cs)
    axis = c / np.maximum(sn, 1e-12)[:, None]
    # antiparallel: any axis perpendicular to a (rare: a bone folded straight back)
    anti = (sn < 1e-9) & (cs < 0)
    if anti.any():
        perp = np.cross(a[anti], np.array([1.0, 0.0, 0.0]))
        bad = np.linalg.norm(perp, axis=-1) < 1e-6
        perp[bad] = np.cross(a[anti][bad], np.array([0.0, 1.0, 0.0]))
        axis[anti] = _unit(perp)
    return axis * ang[:, None]


def finger_pose(joints: np.ndarray, hand) -> np.ndarray:
    """Finger joint rotations (N, 15, 3) in MANO order (see module doc for the derivation)."""
    from scipy.spatial.transform import Rotation

    j, single = _stack(joints)
    n = j.shape[0]
    W = wrist_frame(j, hand)  # (N, 3, 3) wrist frame -> joints' frame
    out = np.zeros((n, 15, 3))
    for fi, finger in enumerate(MANO_FINGER_ORDER):
        base, j1, j2, j3, tip = FINGER_CHAINS[finger]
        pts = [j[:, k] for k in (base, j1, j2, j3, tip)]
        rest = _unit(np.einsum("nji,nj->ni", W, pts[1] - pts[0]))  # metacarpal dir, wrist frame
        G = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()  # bone frame relative to the wrist frame
        for k in range(3):
            d = _unit(np.einsum("nji,nj->ni", W, pts[k + 2] - pts[k + 1]))  # bone dir, wrist frame
            d_parent = np.einsum("nji,nj->ni", G, d)  # expressed in the parent bone's frame
            rv = _swing(rest, _unit(d_parent))
            out[:, fi * 3 + k] = rv
            G = G @ Rotation.from_rotvec(rv).as_matrix()
    return out[0] if single else out


def chirality_score(joints: np.ndarray) -> np.ndarray:
    """Evidence in [-1, 1] that 3D joints form a right (+) or left (-) hand, from their geometry
    alone: fingers curl towards the palm, and ``(index_mcp - wrist) x (pinky_mcp - wrist)`` points
    out of the palm of a right hand and out of the back of a left one. Mirroring the joints flips
    the sign; a flat hand gives ~0 (no evidence)."""
    j, single = _stack(joints)
    n = _unit(np.cross(j[:, INDEX_MCP] - j[:, WRIST], j[:, PINKY_MCP] - j[:, WRIST]))
    pairs = [(THUMB_MCP, THUMB_TIP), (5, 8), (9, 12), (13, 16), (17, 20)]
    curl = np.stack([(_unit(j[:, t] - j[:, b]) * n).sum(-1) for b, t in pairs], axis=-1).mean(-1)
    return curl[0] if single else curl


def view_score(kp2d: np.ndarray) -> np.ndarray:
    """Evidence in [-1, 1] for right (+) / left (-) from the 2D keypoints, under the egocentric prior
    that the back of the hand faces the camera: the image-plane turn from wrist->index MCP to
    wrist->pinky MCP is clockwise on screen (y down) for a right hand seen from its back."""
    k, single = _stack(kp2d)
    u = k[:, INDEX_MCP, :2] - k[:, WRIST, :2]
    v = k[:, PINKY_MCP, :2] - k[:, WRIST, :2]
    cz = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    s = cz / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-9)
    return s[0] if single else s


def with_bone_lengths(joints: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Joints (N, 21, 3) re-chained with the given bone lengths (20, BONES order): each bone keeps its
    direction, the wrist stays where it is, children move with their parents. One person's bones do
    not change length, the landmarker's do from frame to frame (its depth guesses foreshorten them),
    so a track gets one skeleton: its median bone lengths."""
    j, single = _stack(joints)
    L = np.asarray(lengths, float)
    out = j.copy()
    for k, (a, c) in enumerate(BONES):  # BONES is ordered parent before child along each chain
        d = _unit(j[:, c] - j[:, a])
        out[:, c] = out[:, a] + L[..., k, None] * d
    return out[0] if single else out


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Lengths (N, 20) of the tree bones, in BONES order."""
    j, single = _stack(joints)
    a = np.array([b[0] for b in BONES])
    b = np.array([b[1] for b in BONES])
    L = np.linalg.norm(j[:, b] - j[:, a], axis=-1)
    return L[0] if single else L


# -- a template hand ---------------------------------------------------------------------------------

# Right hand in its wrist frame (metres): MCP/CMC positions and phalanx lengths of an average adult
# hand in MediaPipe's joint convention (its landmarks sit where the network puts them, not on the
# anatomical joint centres: e.g. its index proximal phalanx is ~2.7 cm), scaled to wrist -> middle
# MCP = 0.09 m. Measured as median MediaPipe world-landmark bone lengths on the real test clip.
# Fingers continue their metacarpals: the flat pose.
_TEMPLATE_BASES = {
    "thumb": (0.0323, -0.0284, 0.0),
    "index": (0.084, -0.028, 0.0),
    "middle": (0.0897, -0.0073, 0.0),
    "ring": (0.083, 0.011, 0.0),
    "pinky": (0.072, 0.028, 0.0),
}
_TEMPLATE_PHALANGES = {
    "thumb": (0.036, 0.035, 0.023),
    "index": (0.027, 0.025, 0.0226),
    "middle": (0.0365, 0.0254, 0.021),
    "ring": (0.029, 0.0244, 0.0208),
    "pinky": (0.020, 0.020, 0.0142),
}


def template_hand(hand: str = "right", flex_deg: float | dict = 0.0) -> np.ndarray:
    """A (21, 3) hand in its own wrist frame (x to the knuckles, z out of the palm, see module doc).

    ``flex_deg`` bends every finger joint by that angle towards the palm, or per joint with a dict
    ``{"index2": 60, ...}`` (MANO joint names). A left hand is the mirror image (y -> -y).
    """
    j = np.zeros((N_JOINTS, 3))
    for finger, (b, j1, j2, j3, tip) in FINGER_CHAINS.items():
        base = np.array(_TEMPLATE_BASES[finger])
        j[j1] = base
        rest = _unit(base)
        z = np.array([0.0, 0.0, 1.0])
        phi = 0.0
        p = base
        for k, (idx, length) in enumerate(zip((j2, j3, tip), _TEMPLATE_PHALANGES[finger])):
            if isinstance(flex_deg, dict):
                phi += np.radians(flex_deg.get(f"{finger}{k + 1}", 0.0))
            else:
                phi += np.radians(flex_deg)
            d = np.cos(phi) * rest + np.sin(phi) * z
            p = p + length * d
            j[idx] = p
    if hand == "left":
        j[:, 1] *= -1
    elif hand != "right":
        raise ValueError(f"hand={hand!r}: expected 'left' or 'right'")
    return j


TEMPLATE_BONE_LENGTHS = bone_lengths(template_hand())
TEMPLATE_SIZE_M = float(np.linalg.norm(template_hand()[MIDDLE_MCP] - template_hand()[WRIST]))
"""Wrist -> middle MCP of the template hand (MediaPipe's landmark proportions, 9 cm scale)."""
