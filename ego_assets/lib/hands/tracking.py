"""Hand identities across frames and a left/right decision per identity.

Identity: detections are linked frame to frame by the Hungarian algorithm on the distance between
each detection's 21 keypoints and each track's keypoints predicted with a constant-velocity model,
in units of the track's hand size (plus a small term for disagreeing left/right evidence). Using all
21 keypoints rather than the wrist keeps two crossing hands apart: at the crossing their wrists may
coincide, their finger layouts do not. A track ends after ``max_missing`` frames without a match.

Handedness: MediaPipe's label alone is not trusted. Each detection gets an evidence score (log-odds
like, > 0 = right) summing independent cues:

* the MediaPipe label and score (its polarity checked against the geometric cues per video: the
  model was trained on mirrored selfie images and older mediapipe versions report labels for a
  mirrored image; mediapipe 1.2.2 reports them for the image given, 98 % agreement with the truth on
  the test clip);
* chirality of the 3D shape (:func:`~ego_assets.lib.hands.skeleton.chirality_score`);
* the 2D turn wrist->index->pinky under the egocentric prior that the back of the hand faces the camera
  (:func:`~ego_assets.lib.hands.skeleton.view_score`);
* where the hand is: the right hand is on the right of a head-worn camera's image and its forearm
  leaves the hand towards the right (and conversely).

A track's vote is the sum of its detections' evidence. Tracks seen in the same frame must get
different labels (one person has one left hand); per connected group of co-occurring tracks the
labelling that maximises the agreement with the votes under that constraint is chosen (exactly, a
group of tracks being 2-colourable; greedily otherwise). ``handedness_conf`` is the share of the
track's evidence weight that agrees with its label, shrunk for short tracks.
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
    mp: float = 2.0
    chirality: float = 1.5
    view: float = 1.0
    position: float = 1.0


def hand_size_px(kp2d: np.ndarray) -> np.ndarray:
    """A rotation-invariant size of the 2D hand(s): RMS distance of the keypoints to their mean."""
    k = np.asarray(kp2d, float)
    return np.sqrt(((k - k.mean(-2, keepdims=True)) ** 2).sum(-1).mean(-1))


def suppress_duplicates(frame_index: np.ndarray, kp2d: np.ndarray, score: np.ndarray,
                        rel: float = TrackParams.duplicate_rel) -> np.ndarray:
    """Keep-mask dropping the weaker of two detections of one frame that overlap keypoint for
    keypoint (a double detection of one hand would otherwise be forced to opposite labels)."""
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
                if d < rel * max(min(hand_size_px(kp2d[i]), hand_size_px(kp2d[j])), 1.0):
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

@dataclass
class Evidence:
    mp: np.ndarray  # signed MediaPipe label evidence (before any polarity fix), in [-1, 1]
    chirality: np.ndarray
    view: np.ndarray
    position: np.ndarray

    def total(self, w: EvidenceWeights = EvidenceWeights(), mp_sign: float = 1.0) -> np.ndarray:
        return (w.mp * mp_sign * self.mp + w.chirality * np.clip(self.chirality / 0.5, -1, 1)
                + w.view * np.clip(self.view / 0.3, -1, 1) + w.position * self.position)

    def geometric(self, w: EvidenceWeights = EvidenceWeights()) -> np.ndarray:
        return self.total(EvidenceWeights(0.0, w.chirality, w.view, w.position))


def position_score(kp2d: np.ndarray, image_width: float) -> np.ndarray:
    """Evidence in [-1, 1] for right (+) from where the hand is: the wrist's horizontal offset from
    the image centre and the direction in which the forearm leaves the hand (wrist - middle MCP)."""
    k = np.asarray(kp2d, float)
    off = (k[:, 0, 0] - image_width / 2.0) / (image_width / 2.0)
    arm = k[:, 0] - k[:, 9]
    arm_x = arm[:, 0] / np.maximum(np.linalg.norm(arm, axis=-1), 1e-9)
    return np.clip(0.6 * off + 0.6 * arm_x, -1.0, 1.0)


def detection_evidence(kp2d: np.ndarray, world: np.ndarray, mp_label, mp_score: np.ndarray,
                       image_width: float) -> Evidence:
    """Per-detection cues (see module doc); ``mp_label`` 'Left'/'Right' as MediaPipe reports it."""
    lab = np.asarray(mp_label).astype(str)
    sign = np.where(np.char.lower(lab) == "right", 1.0, np.where(np.char.lower(lab) == "left", -1.0, 0.0))
    mp = sign * np.clip(2.0 * np.asarray(mp_score, float) - 1.0, 0.0, 1.0)
    return Evidence(mp=mp, chirality=np.atleast_1d(chirality_score(world)),
                    view=np.atleast_1d(view_score(kp2d)), position=position_score(kp2d, image_width))


def mp_label_polarity(ev: Evidence, w: EvidenceWeights = EvidenceWeights(), min_n: int = 10,
                      flip_below: float = 0.25) -> tuple[float, float]:
    """(+1 or -1, agreement): whether MediaPipe's labels refer to this image (+1) or to its mirror
    image (-1), judged from how often they agree with the geometric cues on detections where those
    are clear. Flipped only on strong contrary evidence; the agreement is reported either way."""
    g = ev.geometric(w)
    clear = (np.abs(g) >= 1.0) & (ev.mp != 0)
    if clear.sum() == 0:
        return 1.0, float("nan")
    agree = float((np.sign(g[clear]) == np.sign(ev.mp[clear])).mean())
    if clear.sum() >= min_n and agree < flip_below:
        return -1.0, agree
    return 1.0, agree


@dataclass
class TrackLabel:
    hand: str
    conf: float
    vote: float
    n: int


def decide_handedness(track_id: np.ndarray, frame_index: np.ndarray, evidence: np.ndarray,
                      prior_weight: float = 2.0) -> dict[int, TrackLabel]:
    """A left/right label per track from per-detection evidence (> 0 right), with tracks that share
    a frame labelled differently (see module doc)."""
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
    out = {}
    for t in tracks:
        t = int(t)
        e = ev[tid == t]
        agree = np.abs(e[np.sign(e) == label[t]]).sum()
        conf = float(agree / (np.abs(e).sum() + prior_weight))
        out[t] = TrackLabel("right" if label[t] > 0 else "left", conf, vote[t], int(len(e)))
    return out
