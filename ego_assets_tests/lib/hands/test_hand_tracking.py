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
    for cue in (ev.mp, ev.chirality, ev.view, ev.arm, ev.network(), ev.image()):
        assert cue[0] < 0 < cue[1]
    assert ev.total()[0] < -2 and ev.total()[1] > 2


def _other(hand: str) -> str:
    return "left" if hand == "right" else "right"


def two_hands_on_a_table(n: int = 30, seed: int = 1, network_swapped: bool = False):
    """Both hands on a table, backs to the camera, left hand on the left; per frame one detection of
    each. ``network_swapped``: the network believes the mirror image for the whole video: its label
    *and* its 3D shape are those of the other hand (what a wrong belief looks like: both follow it)."""
    rng = np.random.default_rng(seed)
    fi, kps, ws, labels, truth = [], [], [], [], []
    for f in range(n):
        for hand in ("left", "right"):
            x = (-0.1 if hand == "left" else 0.1) + rng.normal(0, 0.01)
            k, w = hand_at(hand, x, 0.08, 0.4)
            believed = _other(hand) if network_swapped else hand
            fi.append(f)
            kps.append(k + rng.normal(0, 1.0, k.shape))
            ws.append(w * np.array([1.0, 1.0, -1.0]) if believed != hand else w)  # depth order flipped
            labels.append(believed.capitalize())
            truth.append(hand)
    return np.array(fi), np.array(kps), np.array(ws), labels, np.array(truth)


def test_network_cue_is_label_and_shape_together():
    fi, kp, world, labels, truth = two_hands_on_a_table(network_swapped=True)
    ev = tracking.detection_evidence(kp, world, labels, np.full(len(fi), 0.95), 640)
    # the wrong belief shows in the label and in the 3D chirality alike: one cue, not two votes
    assert (np.sign(ev.mp) == np.sign(ev.chirality)).all()
    assert ((ev.network() > 0) != (truth == "right")).all()
    # the image cues are independent of it and right
    assert ((ev.image() > 0) == (truth == "right")).all()
    # the old weighting (label 2 + chirality 1.5 against view 1 + position 1) followed the network
    old = 2.0 * ev.mp + 1.5 * np.clip(ev.chirality / 0.5, -1, 1) + ev.image()
    assert ((old > 0) != (truth == "right")).mean() > 0.9


def test_a_video_whose_network_is_swapped_is_labelled_right_and_flagged():
    from ego_assets.lib.hands.checks import check_handedness_cues_agree

    fi, kp, world, labels, truth = two_hands_on_a_table(network_swapped=True)
    ev = tracking.detection_evidence(kp, world, labels, np.full(len(fi), 0.95), 640)
    sign, agreement = tracking.network_polarity(ev)
    assert sign == -1.0 and agreement == 0.0  # an inverted labeller is recognised from the image alone
    for s_ in (1.0, sign):  # with or without the polarity fix, the image cues outvote the network
        evidence = ev.total(net_sign=s_)
        ids = tracking.assign_tracks(fi, kp, evidence)
        labels_ = tracking.decide_handedness(ids, fi, evidence)
        for t, lab in labels_.items():
            assert lab.hand == truth[ids == t][0]
    # without the polarity fix the cues of every track disagree: the video fails its check
    import pyarrow as pa

    ids = tracking.assign_tracks(fi, kp, ev.total())
    det = pa.table({"track_id": pa.array(ids, pa.int32()), "cue_network": ev.network(),
                    "cue_image": ev.image()})
    ok, value, detail = check_handedness_cues_agree(det)
    assert not ok and value == 0.0 and "contested tracks" in detail, detail
    for t in np.unique(ids):
        c = tracking.cue_agreement(ev.network()[ids == t], ev.image()[ids == t])
        assert c.contested and c.agreement == 0.0 and c.n_clear == (ids == t).sum()
    # a correct network: full agreement, the check passes
    fi, kp, world, labels, truth = two_hands_on_a_table()
    ev = tracking.detection_evidence(kp, world, labels, np.full(len(fi), 0.95), 640)
    ids = tracking.assign_tracks(fi, kp, ev.total())
    det = pa.table({"track_id": pa.array(ids, pa.int32()), "cue_network": ev.network(),
                    "cue_image": ev.image()})
    ok, value, detail = check_handedness_cues_agree(det)
    assert ok and value == 1.0, detail


def test_every_cue_flips_in_a_mirror_image():
    fi, kp, world, labels, truth = two_hands_on_a_table()
    ev = tracking.detection_evidence(kp, world, labels, np.full(len(fi), 0.95), 640)
    # the mirror image: x -> (W - 1) - x, the network sees the other hand (label and shape mirrored)
    kp_m = kp.copy()
    kp_m[..., 0] = 639.0 - kp_m[..., 0]
    ev_m = tracking.detection_evidence(kp_m, world * np.array([-1.0, 1, 1]),
                                       [_other(x.lower()).capitalize() for x in labels],
                                       np.full(len(fi), 0.95), 640)
    for a, b in ((ev.view, ev_m.view), (ev.arm, ev_m.arm), (ev.mp, ev_m.mp), (ev.chirality, ev_m.chirality)):
        np.testing.assert_allclose(b, -a, atol=1e-9)


def test_arm_cue_follows_the_forearm_when_a_hand_reaches_across():
    # a right hand on the far left of the image, its forearm leaving towards the bottom right
    R = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    T = template_hand("right", 20)
    tilt = np.array([[np.cos(-0.7), -np.sin(-0.7), 0], [np.sin(-0.7), np.cos(-0.7), 0], [0, 0, 1]])
    P = (T - T[0]) @ R.T @ tilt.T + [-0.12, 0.08, 0.4]
    p = P @ K.T
    kp = p[:, :2] / p[:, 2:]
    assert kp[0, 0] < 250  # the wrist is on the left third
    assert kp[0, 0] > kp[9, 0]  # the forearm (wrist - middle MCP) points right
    assert tracking.arm_score(kp[None], 640)[0] > 0.2


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


def test_one_shared_frame_does_not_flip_a_confident_track():
    # track 0: seven detections clearly left; track 1: four clearly left, sharing frame 6 with track 0
    # (a mistracked or spurious detection): both stay left, the shared frame is resolved downstream
    tid = np.array([0] * 7 + [1] * 4)
    fi = np.array([0, 1, 2, 3, 4, 5, 6, 6, 7, 8, 9])
    ev = np.array([-2.0] * 7 + [-2.5] * 4)
    lab = tracking.decide_handedness(tid, fi, ev)
    assert lab[0].hand == lab[1].hand == "left"
    # a weak track is still given the other label by the constraint
    ev2 = np.array([-2.0] * 7 + [-0.3] * 4)
    lab = tracking.decide_handedness(tid, fi, ev2)
    assert (lab[0].hand, lab[1].hand) == ("left", "right")


def test_overlapping_detections_of_one_hand_are_one_detection_two_hands_are_two():
    k, _ = hand_at("right", 0.1, 0.08, 0.4)
    k_shift = k + np.array([12.0, -15.0])  # the same hand found twice, landmarks shifted
    kl, _ = hand_at("left", 0.1, 0.08, 0.43)  # a left hand over the right one (hands crossing)
    fi = np.array([0, 0])
    assert tracking.suppress_duplicates(fi, np.stack([k, k_shift]), np.array([0.9, 0.8]),
                                        evidence=np.array([2.0, 1.5])).tolist() == [True, False]
    assert tracking.suppress_duplicates(fi, np.stack([k, kl]), np.array([0.9, 0.8]),
                                        evidence=np.array([2.0, -1.5])).tolist() == [True, True]
