"""Identities through crossing hands, and the left/right decision from evidence."""

from __future__ import annotations

import numpy as np
import pytest

from ego_assets.lib.hands import tracking
from ego_assets.lib.hands.skeleton import template_hand

K = np.array([[320.0, 0, 319.5], [0, 320.0, 239.5], [0, 0, 1]])
# back of the hand to the camera, fingers up in the image (a head-worn view)
R_BACK = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])


def hand_at(hand: str, x: float, y: float, z: float, flex: float = 20.0):
    T = template_hand(hand, flex)
    P = (T - T[0]) @ R_BACK.T + [x, y, z]
    p = P @ K.T
    return p[:, :2] / p[:, 2:], (T - T.mean(0)) @ R_BACK.T  # keypoints, world-like shape


def crossing(n: int = 21, drop_at_crossing: bool = True, seed: int = 0):
    """The left hand moves right and the right hand moves left; they cross mid-way at the same image
    height (the left one nearer the camera), where the landmarker sees only one of them."""
    rng = np.random.default_rng(seed)
    fi, kp, world, truth = [], [], [], []
    for f in range(n):
        a = f / (n - 1)
        for hand, x in (("left", -0.16 + 0.32 * a), ("right", 0.16 - 0.32 * a)):
            if drop_at_crossing and f == n // 2 and hand == "right":
                continue
            z = 0.38 if hand == "left" else 0.45
            k, w = hand_at(hand, x * z / 0.4, 0.08, z)
            fi.append(f)
            kp.append(k + rng.normal(0, 1.0, k.shape))
            world.append(w)
            truth.append(hand)
    return np.array(fi), np.array(kp), np.array(world), np.array(truth)


def _identity_ok(ids, truth):
    return all(len(set(truth[ids == t])) == 1 for t in np.unique(ids))


@pytest.mark.parametrize("drop", [False, True])
def test_identities_survive_crossing_hands(drop):
    fi, kp, world, truth = crossing(drop_at_crossing=drop)
    # no help from left/right evidence: motion and shape alone
    ids = tracking.assign_tracks(fi, kp)
    assert _identity_ok(ids, truth)
    assert len(np.unique(ids)) == 2
    # the wrists do pass each other in the image
    lw = kp[truth == "left"][:, 0, 0]
    rw = kp[truth == "right"][:, 0, 0]
    assert lw[0] < 250 and lw[-1] > 390 and rw[0] > 390 and rw[-1] < 250


def test_handedness_through_crossing_with_misleading_cues():
    fi, kp, world, truth = crossing()
    # MediaPipe says 'Right' for both hands; after the crossing the position cue lies too
    ev = tracking.detection_evidence(kp, world, ["Right"] * len(fi), np.full(len(fi), 0.6), 640)
    evidence = ev.total()
    ids = tracking.assign_tracks(fi, kp, evidence)
    assert _identity_ok(ids, truth)
    labels = tracking.decide_handedness(ids, fi, evidence)
    for t, lab in labels.items():
        assert lab.hand == truth[ids == t][0]
        assert 0.5 < lab.conf <= 1.0


def test_two_hands_in_a_frame_get_two_labels():
    # both tracks' evidence says right; they share frames, so one of them must be the left
    fi = np.array([0, 0, 1, 1, 2, 2])
    tid = np.array([0, 1, 0, 1, 0, 1])
    ev = np.array([3.0, 0.5, 3.0, 0.4, 2.0, 0.6])
    labels = tracking.decide_handedness(tid, fi, ev)
    assert labels[0].hand == "right" and labels[1].hand == "left"
    assert labels[1].conf < 0.5 < labels[0].conf  # forced against its own evidence: low confidence
    # a lone track in other frames follows its own vote
    labels = tracking.decide_handedness(np.array([0, 0, 2]), np.array([0, 1, 5]), np.array([-1.0, -2.0, 1.0]))
    assert labels[0].hand == "left" and labels[2].hand == "right"


def test_chain_of_co_occurring_tracks():
    # A with B in frames 0-1, B with C in frames 2-3: A and C get the same label, B the other
    fi = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    tid = np.array([0, 1, 0, 1, 2, 1, 2, 1])
    ev = np.array([-1.0, 2.0, -1.0, 2.0, 0.2, 2.0, 0.1, 2.0])
    lab = tracking.decide_handedness(tid, fi, ev)
    assert (lab[0].hand, lab[1].hand, lab[2].hand) == ("left", "right", "left")


def test_detection_evidence_signs():
    kp_l, w_l = hand_at("left", -0.1, 0.08, 0.4)
    kp_r, w_r = hand_at("right", 0.1, 0.08, 0.4)
    ev = tracking.detection_evidence(np.stack([kp_l, kp_r]), np.stack([w_l, w_r]), ["Left", "Right"],
                                     np.array([0.9, 0.9]), 640)
    for cue in (ev.mp, ev.chirality, ev.view, ev.position):
        assert cue[0] < 0 < cue[1]
    assert ev.total()[0] < -3 and ev.total()[1] > 3


def test_mirrored_mediapipe_labels_are_detected():
    rng = np.random.default_rng(1)
    kps, ws, labels, truth = [], [], [], []
    for i in range(30):
        hand = "left" if i % 2 else "right"
        x = (-0.1 if hand == "left" else 0.1) + rng.normal(0, 0.01)
        k, w = hand_at(hand, x, 0.08, 0.4)
        kps.append(k)
        ws.append(w)
        labels.append("Right" if hand == "left" else "Left")  # a mirrored-image labeller
        truth.append(hand)
    ev = tracking.detection_evidence(np.array(kps), np.array(ws), labels, np.full(30, 0.95), 640)
    sign, agreement = tracking.mp_label_polarity(ev)
    assert sign == -1.0 and agreement == 0.0
    fixed = ev.total(mp_sign=sign)
    assert ((fixed > 0) == (np.array(truth) == "right")).all()
    # correct labels are left alone
    ev.mp = -ev.mp
    assert tracking.mp_label_polarity(ev) == (1.0, 1.0)


def test_duplicate_detections_are_suppressed():
    k, _ = hand_at("right", 0.1, 0.08, 0.4)
    k2, _ = hand_at("left", -0.1, 0.08, 0.4)
    fi = np.array([0, 0, 0])
    kp = np.stack([k, k + 2.0, k2])
    keep = tracking.suppress_duplicates(fi, kp, np.array([0.7, 0.9, 0.8]))
    assert keep.tolist() == [False, True, True]


def test_tracks_end_after_max_missing_frames():
    k, _ = hand_at("right", 0.1, 0.08, 0.4)
    fi = np.array([0, 1, 2, 30, 31])
    ids = tracking.assign_tracks(fi, np.stack([k] * 5), params=tracking.TrackParams(max_missing=10))
    assert ids[0] == ids[1] == ids[2] and ids[3] == ids[4] and ids[0] != ids[3]
