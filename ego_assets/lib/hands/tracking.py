"""Hand identities across frames and a left/right decision per identity.

Identity: detections are linked frame to frame by the Hungarian algorithm on the distance between
each detection's 21 keypoints and each track's keypoints predicted with a constant-velocity model,
in units of the track's hand size (plus a small term for disagreeing left/right evidence). Using all
21 keypoints rather than the wrist keeps two crossing hands apart: at the crossing their wrists may
coincide, their finger layouts do not. A track ends after ``max_missing`` frames without a match.

Handedness: each detection gets three cues, each in [-1, 1] (> 0 = right), from sources that can
be wrong *independently* of each other:

* ``network``: what the landmark network believes: its label (score-weighted) together with the
  chirality of its 3D world landmarks. These two are one cue, not two: the network resolves the
  "right hand seen from the back or left hand seen from the palm" ambiguity of a 2D hand layout once,
  and both its label and its 3D shape (even the depth order of its landmarks combined with the image
  keypoints) follow that one decision. Measured on the real clips in ../shared/data: world-landmark
  chirality agrees with the label on 94-100 % of detections, image-plane keypoints + network depth on
  99-100 % of the chirality. Counting them as two votes (as this module once did, with 3.5 of 5.5 of
  the weight) lets one wrong network belief outvote the image cues for a whole video, and checking
  the label's polarity against a "geometric" score that contained the same chirality can never
  detect it: the evidence agreed with itself.
* ``view``: the 2D turn wrist -> index MCP -> pinky MCP in the image (the thumb side), under the
  egocentric prior that the back of the hand faces a head-worn camera
  (:func:`~ego_assets.lib.hands.skeleton.view_score`); wrong when the palm faces the camera.
* ``arm``: the side of the body the hand belongs to: the direction in which the forearm leaves the
  hand (wrist - middle MCP, in the image) and where that line meets the image border; wrong for
  a hand reaching far across the body.

``view`` and ``arm`` use the 2D keypoints only, so none of the three shares a failure with another,
and all three flip under a horizontal mirror of the video (tested on mirrored real clips). The
network's polarity is checked per video against the image cues alone (an older MediaPipe labels the
mirror image); the decision per detection is the weighted sum, so two independent cues outvote a
third, and a track's vote is the sum over its detections.

A track that is seen with another in a frame must get the other label (one person has one left
hand); per connected group of co-occurring tracks the labelling that maximises the agreement with
the votes under that constraint is chosen (exactly, a group of tracks being 2-colourable; greedily
otherwise), except that a track whose own evidence is confident keeps its label (a single shared
frame with a spurious or mistracked detection must not flip it). ``handedness_conf`` is the share of
the track's evidence weight that agrees with its label, shrunk for short tracks. Two detections of
one frame that are one hand (keypoints nearly identical, or boxes overlapping with evidence for the
same hand) are merged first, so that they are not forced apart.

Agreement is recorded, never assumed: per track, :func:`cue_agreement` gives the share of its
detections on which the network and the image cues point to the same hand, and the vote of each;
:func:`video_agreement` summarises a video, and
:func:`~ego_assets.lib.hands.checks.check_handedness_cues_agree` fails the video when its labels rest
on cues that contradict each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ego_assets.lib.hands.skeleton import PALM_JOINTS, chirality_score, view_score


@dataclass(frozen=True)
class TrackParams:
    max_missing: int = 10  # frames a track may go unseen and still be continued
    gate: float = 2.5  # max matching cost (mean keypoint distance in hand sizes)
    evidence_weight: float = 0.3  # cost added for fully contradicting left/right evidence
    velocity_smoothing: float = 0.6  # weight of the newest velocity in the running estimate
    duplicate_rel: float = 0.3  # two detections closer than this (hand sizes) are the same hand
    min_size_px: float = 8.0


@dataclass(frozen=True)
class EvidenceWeights:
    """Weights of the three independent cues (see module doc): equal, so that any two that agree
    outvote the third."""

    network: float = 1.0
    view: float = 1.0
    arm: float = 1.0


def hand_size_px(kp2d: np.ndarray) -> np.ndarray:
    """A rotation-invariant size of the 2D hand(s): RMS distance of the keypoints to their mean."""
    k = np.asarray(kp2d, float)
    return np.sqrt(((k - k.mean(-2, keepdims=True)) ** 2).sum(-1).mean(-1))


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the smaller keypoint bounding box covered by the other."""
    lo, hi = np.maximum(a.min(0), b.min(0)), np.minimum(a.max(0), b.max(0))
    inter = float(np.prod(np.maximum(hi - lo, 0.0)))
    area = min(float(np.prod(a.max(0) - a.min(0))), float(np.prod(b.max(0) - b.min(0))))
    return inter / max(area, 1e-9)


def suppress_duplicates(frame_index: np.ndarray, kp2d: np.ndarray, score: np.ndarray,
                        rel: float = TrackParams.duplicate_rel, max_overlap: float = 0.5,
                        evidence: np.ndarray | None = None, clear: float = 0.5) -> np.ndarray:
    """Keep-mask dropping the weaker of two detections of one frame that are one hand: keypoint for
    keypoint closer than ``rel`` hand sizes, or, when ``evidence`` (> 0 right) says both are clearly
    the same hand (same sign, both beyond ``clear``), keypoint boxes overlapping by more than
    ``max_overlap`` of the smaller one. With low detection thresholds the palm detector can find one
    hand twice with shifted landmarks (seen on a real one-hand clip); such a pair would otherwise be
    forced to opposite labels, one of them wrong. Two real hands that overlap (crossing) have
    opposite evidence and are both kept."""
    keep = np.ones(len(frame_index), bool)
    for f in np.unique(frame_index):
        idx = np.flatnonzero(frame_index == f)
        if len(idx) < 2:
            continue
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                if not (keep[i] and keep[j]):
                    continue
                d = np.linalg.norm(kp2d[i] - kp2d[j], axis=-1).mean()
                same = d < rel * max(min(hand_size_px(kp2d[i]), hand_size_px(kp2d[j])), 1.0)
                if not same and evidence is not None and evidence[i] * evidence[j] > 0 \
                        and min(abs(evidence[i]), abs(evidence[j])) > clear:
                    same = box_overlap(kp2d[i], kp2d[j]) > max_overlap
                if same:
                    keep[j if score[i] >= score[j] else i] = False
    return keep


def assign_tracks(frame_index: np.ndarray, kp2d: np.ndarray, evidence: np.ndarray | None = None,
                  params: TrackParams = TrackParams()) -> np.ndarray:
    """Track ids (D,) for detections given by frame index (D,) and 2D keypoints (D, 21, 2).

    Detections of one frame always get different ids. ``evidence`` (D,), > 0 for right, adds a
    penalty for linking a detection to a track whose evidence so far says the other hand.
    """
    from scipy.optimize import linear_sum_assignment

    fi = np.asarray(frame_index)
    kp = np.asarray(kp2d, float)
    ev = np.zeros(len(fi)) if evidence is None else np.asarray(evidence, float)
    ids = np.full(len(fi), -1, np.int64)
    palm = list(PALM_JOINTS)
    tracks: list[dict] = []  # active: last frame, keypoints, velocity, size, evidence sum
    next_id = 0
    order = np.argsort(fi, kind="stable")
    bounds = np.flatnonzero(np.diff(fi[order])) + 1
    for group in np.split(order, bounds):
        if len(group) == 0:
            continue
        f = int(fi[group[0]])
        tracks = [t for t in tracks if f - t["last"] <= params.max_missing + 1]
        cost = np.full((len(tracks), len(group)), np.inf)
        for a, t in enumerate(tracks):
            dt = f - t["last"]
            pred = t["kp"] + t["vel"] * dt
            scale = max(t["size"], params.min_size_px)
            tv = np.tanh(t["ev"] / 4.0)
            for b, d in enumerate(group):
                c = np.linalg.norm(kp[d] - pred, axis=-1).mean() / scale
                c += params.evidence_weight * abs(np.tanh(ev[d] / 2.0) - tv) / 2.0
                cost[a, b] = c
        matched = set()
        if len(tracks):
            big = 1e6
            c = np.where(np.isfinite(cost) & (cost <= params.gate), cost, big)
            rows, cols = linear_sum_assignment(c)
            for a, b in zip(rows, cols):
                if c[a, b] >= big:
                    continue
                t, d = tracks[a], group[b]
                dt = f - t["last"]
                v_new = (kp[d][palm].mean(0) - t["kp"][palm].mean(0)) / dt
                s = params.velocity_smoothing
                t["vel"] = s * v_new + (1 - s) * t["vel"]
                t.update(last=f, kp=kp[d], size=float(hand_size_px(kp[d])), ev=t["ev"] + ev[d])
                ids[d] = t["id"]
                matched.add(b)
        for b, d in enumerate(group):
            if b in matched:
                continue
            tracks.append(dict(id=next_id, last=f, kp=kp[d], vel=np.zeros(2),
                               size=float(hand_size_px(kp[d])), ev=float(ev[d])))
            ids[d] = next_id
            next_id += 1
    return ids


# -- evidence ----------------------------------------------------------------------------------------

VIEW_FULL = 0.3  # |view_score| at which the view cue counts fully (a 17 deg turn)
CHIRALITY_FULL = 0.5  # |chirality_score| at which the network's 3D shape counts fully


@dataclass
class Evidence:
    """Per-detection cues in [-1, 1], > 0 for right (see module doc)."""

    mp: np.ndarray  # the network's label x its confidence (before any polarity fix)
    chirality: np.ndarray  # chirality of the network's 3D shape (same belief as ``mp``)
    view: np.ndarray  # 2D thumb side under the back-of-the-hand prior
    arm: np.ndarray  # side of the body, from the forearm's direction and border entry

    def network(self, sign: float = 1.0) -> np.ndarray:
        """The network's belief as one cue: label and 3D-shape chirality averaged (they disagree only
        when the network itself is unsure, which then gives ~0)."""
        return sign * 0.5 * (self.mp + np.clip(self.chirality / CHIRALITY_FULL, -1, 1))

    def image(self, w: EvidenceWeights = EvidenceWeights()) -> np.ndarray:
        """The cues from the 2D keypoints alone, independent of the network's belief."""
        return w.view * np.clip(self.view / VIEW_FULL, -1, 1) + w.arm * self.arm

    def total(self, w: EvidenceWeights = EvidenceWeights(), net_sign: float = 1.0) -> np.ndarray:
        return w.network * self.network(net_sign) + self.image(w)

    def flipped(self) -> "Evidence":
        """The evidence of the mirror image: every cue changes sign."""
        return Evidence(-self.mp, -self.chirality, -self.view, -self.arm)


def arm_score(kp2d: np.ndarray, image_width: float, cx: float | None = None) -> np.ndarray:
    """Evidence in [-1, 1] for right (+) from the side of the body the hand belongs to: the x
    direction in which the forearm leaves the hand (wrist - middle MCP) and the x offset from the
    principal point of where the forearm's line meets the image border (a right forearm enters from
    the bottom-right or the right edge of a head-worn view). ``cx`` defaults to the image centre,
    so that a horizontally mirrored image gives exactly the opposite score."""
    k = np.asarray(kp2d, float)
    cx = (image_width - 1) / 2.0 if cx is None else float(cx)
    half = image_width / 2.0
    arm = k[:, 0] - k[:, 9]
    d = arm / np.maximum(np.linalg.norm(arm, axis=-1, keepdims=True), 1e-9)
    # walk from the wrist along the forearm to the left/right edge or one image width, whichever first
    x0 = k[:, 0, 0]
    room = np.where(d[:, 0] > 0, (cx + half) - x0, x0 - (cx - half))
    steps = np.minimum(np.maximum(room, 0.0) / np.maximum(np.abs(d[:, 0]), 1e-9), 2.0 * half)
    entry = x0 + d[:, 0] * steps
    off = np.clip((entry - cx) / half, -1.0, 1.0)
    return np.clip(0.5 * off + 0.7 * d[:, 0], -1.0, 1.0)


def detection_evidence(kp2d: np.ndarray, world: np.ndarray, mp_label, mp_score: np.ndarray,
                       image_width: float, cx: float | None = None) -> Evidence:
    """Per-detection cues (see module doc); ``mp_label`` 'Left'/'Right' as MediaPipe reports it."""
    lab = np.asarray(mp_label).astype(str)
    sign = np.where(np.char.lower(lab) == "right", 1.0, np.where(np.char.lower(lab) == "left", -1.0, 0.0))
    mp = sign * np.clip(2.0 * np.asarray(mp_score, float) - 1.0, 0.0, 1.0)
    return Evidence(mp=mp, chirality=np.atleast_1d(chirality_score(world)),
                    view=np.atleast_1d(view_score(kp2d)), arm=arm_score(kp2d, image_width, cx))


def network_polarity(ev: Evidence, w: EvidenceWeights = EvidenceWeights(), min_n: int = 10,
                     flip_below: float = 0.25, clear: float = 1.0) -> tuple[float, float]:
    """(+1 or -1, agreement): whether the network's belief refers to this image (+1) or to its mirror
    image (-1), judged *only* from the image cues (never from the network's own 3D shape), on the
    detections where both image cues are clear and agree (``|image| >= clear``). Flipped only on
    strong contrary evidence; the agreement is reported either way."""
    g = ev.image(w)
    n = ev.network()
    ok = (np.abs(g) >= clear) & (np.abs(n) > 0.2)
    if ok.sum() == 0:
        return 1.0, float("nan")
    agree = float((np.sign(g[ok]) == np.sign(n[ok])).mean())
    if ok.sum() >= min_n and agree < flip_below:
        return -1.0, agree
    return 1.0, agree


@dataclass
class CueAgreement:
    """How the cues of one track agree (see :func:`cue_agreement`)."""

    agreement: float  # share of clear detections on which network and image cues name the same hand
    n_clear: int  # detections where both were clear
    network_vote: float  # sum of the network cue over the track (> 0 right)
    image_vote: float  # sum of the image cues over the track
    contested: bool  # the network and the image cues, summed over the track, name different hands


def cue_agreement(network: np.ndarray, image: np.ndarray, clear_net: float = 0.2,
                  clear_image: float = 0.5) -> CueAgreement:
    """Agreement of the (weighted) network cue with the (weighted) image cues over the detections of
    one track: ``network`` = ``w.network * Evidence.network(sign)``, ``image`` = ``Evidence.image(w)``.
    A detection counts when both are clear; the track is *contested* when the two sums are each worth
    at least one clear detection and name different hands."""
    n = np.asarray(network, float)
    g = np.asarray(image, float)
    ok = (np.abs(n) > clear_net) & (np.abs(g) > clear_image)
    agree = float((np.sign(n[ok]) == np.sign(g[ok])).mean()) if ok.any() else float("nan")
    nv, gv = float(n.sum()), float(g.sum())
    contested = bool(np.sign(nv) != np.sign(gv) and abs(nv) >= 1.0 and abs(gv) >= 1.0)
    return CueAgreement(agree, int(ok.sum()), nv, gv, contested)


def video_agreement(per_track: dict[int, CueAgreement], n_rows: dict[int, int]) -> dict:
    """A video's handedness agreement: ``agreement`` (detection-weighted over tracks with clear
    detections), ``contested_fraction`` (share of detections in contested tracks)."""
    tot = sum(n_rows.values())
    num = sum(c.agreement * c.n_clear for c in per_track.values() if c.n_clear)
    den = sum(c.n_clear for c in per_track.values())
    contested = sum(n_rows[t] for t, c in per_track.items() if c.contested)
    return dict(agreement=num / den if den else float("nan"),
                contested_fraction=contested / tot if tot else 0.0)


@dataclass
class TrackLabel:
    hand: str
    conf: float
    vote: float
    n: int


def decide_handedness(track_id: np.ndarray, frame_index: np.ndarray, evidence: np.ndarray,
                      prior_weight: float = 2.0, confident: float = 1.0) -> dict[int, TrackLabel]:
    """A left/right label per track from per-detection evidence (> 0 right), with tracks that share
    a frame labelled differently (see module doc), except that a track whose own evidence is
    confident (mean per detection at least ``confident``, i.e. two of the three cues clear) keeps its
    own label: a single shared frame with a mistracked or spurious detection must not flip a whole
    track against its evidence (seen on a real one-hand clip, mirrored). Two tracks that then share a
    label in a frame are resolved row by row downstream (the better-scored row stays)."""
    tid = np.asarray(track_id)
    fi = np.asarray(frame_index)
    ev = np.asarray(evidence, float)
    tracks = np.unique(tid)
    vote = {int(t): float(ev[tid == t].sum()) for t in tracks}
    # co-occurrence graph
    adj: dict[int, set[int]] = {int(t): set() for t in tracks}
    order = np.argsort(fi, kind="stable")
    for grp in np.split(order, np.flatnonzero(np.diff(fi[order])) + 1):
        ts = sorted({int(t) for t in tid[grp]})
        for a in range(len(ts)):
            for b in range(a + 1, len(ts)):
                adj[ts[a]].add(ts[b])
                adj[ts[b]].add(ts[a])
    label: dict[int, int] = {}
    seen: set[int] = set()
    for start in sorted(adj):
        if start in seen:
            continue
        comp, colour, bipartite = [], {start: 1}, True
        stack = [start]
        seen.add(start)
        while stack:
            u = stack.pop()
            comp.append(u)
            for v in adj[u]:
                if v not in colour:
                    colour[v] = -colour[u]
                    seen.add(v)
                    stack.append(v)
                elif colour[v] == colour[u]:
                    bipartite = False
        if bipartite:
            score = sum(colour[t] * vote[t] for t in comp)
            s = 1 if score >= 0 else -1
            for t in comp:
                label[t] = s * colour[t]
        else:  # greedy: most confident first, respecting already labelled neighbours when possible
            for t in sorted(comp, key=lambda t: -abs(vote[t])):
                taken = {label[v] for v in adj[t] if v in label}
                want = 1 if vote[t] >= 0 else -1
                label[t] = want if want not in taken else (-want if -want not in taken else want)
    for t in tracks:
        t = int(t)
        e = ev[tid == t]
        if abs(e.mean()) >= confident and np.sign(e.mean()) != label[t]:
            label[t] = int(np.sign(e.mean()))
    out = {}
    for t in tracks:
        t = int(t)
        e = ev[tid == t]
        agree = np.abs(e[np.sign(e) == label[t]]).sum()
        conf = float(agree / (np.abs(e).sum() + prior_weight))
        out[t] = TrackLabel("right" if label[t] > 0 else "left", conf, vote[t], int(len(e)))
    return out
