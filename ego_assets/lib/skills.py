"""Skill discovery: the segments of every video grouped into skills (Ego2Robot's unsupervised stage).

Each (segment, hand) gets an embedding; segments are clustered with k-means (scikit-learn, seeded) and
each cluster gets a readable label. The fitted model (scaler, cluster centres, labels, 2-D projection,
seed, version) is kept as JSON so that new videos are assigned to the existing skills without refitting;
refitting is an explicit choice of the caller.

Embedders (``EMBEDDERS``, chosen with ``EGO_ASSETS_SKILLS_EMBEDDER``): the built-in ``kinematic`` one
works on CPU from what the pipeline already measured (the wrist trajectory in the world frame and in the
camera axes of the segment's first frame, the speed profile, the grasp change, the hand, the duration).
A visual embedder (CLIP, VideoMAE on a GPU) plugs in with :func:`register_embedder`: a class with a
``name``, a ``version``, the ``resources`` it needs and ``embed(segments) -> (n, d) array``.

Pure logic: no Dagster; scikit-learn is imported inside the functions that use it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa

from ego_assets.lib import settings
from ego_assets.lib.backends import Resources

MODEL_VERSION = "1"
DEFAULT_SEED = 0
DEFAULT_MAX_SKILLS = 10
ENV_EMBEDDER = settings.var("SKILLS_EMBEDDER")
_PROFILE_BINS = 5
_THUMB_TIP, _INDEX_TIP = 4, 8
# camera axes (OpenCV: x right, y down, z forward) -> words for + and - travel
_AXIS_WORDS = {0: ("right", "left"), 1: ("down", "up"), 2: ("forward", "back")}
_GRASP_APERTURE_M = 0.015


@dataclass
class SegmentInput:
    """What the embedders see of one (segment, hand): the measured wrist path and its caption."""

    partition_key: str
    segment_id: int
    hand: str
    t_s: np.ndarray                     # (n,)
    wrist_world: np.ndarray             # (n, 3)
    speed: np.ndarray                   # (n,)
    aperture: np.ndarray                # (n,) thumb-index tip distance, metres (NaN when unknown)
    flexion_deg: np.ndarray             # (n,) mean finger-joint flexion
    displacement_cam: np.ndarray | None = None  # (3,) in the camera axes of the first frame
    caption: dict = field(default_factory=dict)  # captioner, instruction, details (parsed)
    overlay_uri: str | None = None

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.partition_key, int(self.segment_id), self.hand)


# -- inputs from the per-video tables ----------------------------------------------------------------

def segment_inputs(partition_key: str, segments: pa.Table, hand_world: pa.Table,
                   captions: pa.Table | None = None) -> list[SegmentInput]:
    """One :class:`SegmentInput` per valid segment of a video (valid per ``segments`` and, when captioned,
    per its caption), from its ``segments``, ``hand_world`` and ``captions`` tables."""
    caps = {}
    if captions is not None and captions.num_rows:
        for c in captions.to_pylist():
            caps[(int(c["segment_id"]), c["hand"])] = c
    hw = hand_world.to_pydict()
    hw_hand = np.asarray(hw["hand"], dtype=object)
    hw_seg = np.asarray([-1 if v is None else v for v in hw["segment_id"]], dtype=np.int64)
    hw_frame = np.asarray(hw["frame_index"], dtype=np.int64)
    out = []
    for seg in segments.to_pylist():
        if not seg.get("valid"):
            continue
        sid, hand = int(seg["segment_id"]), seg["hand"]
        cap = caps.get((sid, hand))
        if cap is not None and cap.get("valid") is False:
            continue  # captioned N/A: not an action (it has no episode either)
        m = (hw_hand == hand) & (hw_seg == sid)
        if m.sum() < 2:  # segment ids not carried: the frame range
            m = (hw_hand == hand) & (hw_frame >= seg["start_frame"]) & (hw_frame <= seg["end_frame"])
        idx = np.flatnonzero(m)
        if len(idx) < 2:
            continue
        idx = idx[np.argsort(hw_frame[idx], kind="stable")]
        t = np.asarray([hw["t_s"][i] for i in idx], float)
        wrist = np.asarray([hw["wrist_pos_world"][i] for i in idx], float)
        speed = np.asarray([np.nan if hw["speed_mps"][i] is None else hw["speed_mps"][i] for i in idx], float)
        if "joints_world" in hw and hw["joints_world"][idx[0]] is not None:
            j = np.asarray([hw["joints_world"][i] for i in idx], float).reshape(-1, 21, 3)
            aperture = np.linalg.norm(j[:, _THUMB_TIP] - j[:, _INDEX_TIP], axis=1)
        else:
            aperture = np.full(len(idx), np.nan)
        if "finger_pose" in hw and hw["finger_pose"][idx[0]] is not None:
            fp = np.asarray([hw["finger_pose"][i] for i in idx], float).reshape(-1, 15, 3)
            flex = np.rad2deg(np.linalg.norm(fp, axis=2).mean(axis=1))
        else:
            flex = np.full(len(idx), np.nan)
        details = {}
        if cap is not None and cap.get("details"):
            try:
                details = json.loads(cap["details"]) or {}
            except (TypeError, ValueError):
                details = {}
        dcam = details.get("displacement_cam_m")
        out.append(SegmentInput(
            partition_key, sid, hand, t, wrist, speed, aperture, flex,
            displacement_cam=np.asarray(dcam, float) if dcam and len(dcam) == 3 else None,
            caption={"captioner": (cap or {}).get("captioner"), "instruction": (cap or {}).get("instruction"),
                     "details": details},
            overlay_uri=(cap or {}).get("overlay_uri")))
    return out


# -- embedders -----------------------------------------------------------------------------------------

class Embedder:
    """One embedding per segment. Subclasses set ``name``, ``version``, ``resources`` and ``embed``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    resources: ClassVar[Resources] = Resources()
    feature_names: ClassVar[tuple[str, ...]] = ()

    def embed(self, segs: list[SegmentInput]) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def code_version(cls) -> str:
        return f"{cls.name}@{cls.version}"


EMBEDDERS: dict[str, type[Embedder]] = {}


def register_embedder(cls: type[Embedder]) -> type[Embedder]:
    """Make an embedder selectable by its name (``EGO_ASSETS_SKILLS_EMBEDDER=<name>``)."""
    EMBEDDERS[cls.name] = cls
    return cls


def embedder_class(name: str | None = None) -> type[Embedder]:
    """The configured embedder's class (``EGO_ASSETS_SKILLS_EMBEDDER``, default ``kinematic``)."""
    name = (name or settings.get("SKILLS_EMBEDDER"))
    if name not in EMBEDDERS:
        raise ValueError(f"unknown skills embedder {name!r} ({ENV_EMBEDDER}); "
                         f"available: {', '.join(sorted(EMBEDDERS))}")
    return EMBEDDERS[name]


def embedder(name: str | None = None) -> Embedder:
    return embedder_class(name)()


def _nanmean(x: np.ndarray, default: float = 0.0) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else default


def _edges(x: np.ndarray) -> tuple[float, float]:
    e = max(1, min(3, len(x) // 3 or 1))
    return _nanmean(x[:e], np.nan), _nanmean(x[-e:], np.nan)


@register_embedder
class KinematicEmbedder(Embedder):
    """CPU embedding from the measured wrist motion (no images)."""

    name = "kinematic"
    version = "1"
    feature_names = (
        "hand_right", "log_duration", "log_path", "straightness", "log_mean_speed", "peak_ratio",
        "dir_world_x", "dir_world_y", "dir_world_z", "dir_cam_x", "dir_cam_y", "dir_cam_z",
        *[f"speed_profile_{i}" for i in range(_PROFILE_BINS)], "aperture_change", "flexion_change")

    def embed(self, segs: list[SegmentInput]) -> np.ndarray:
        return np.stack([self.one(s) for s in segs]) if segs else np.zeros((0, len(self.feature_names)))

    @staticmethod
    def raw(s: SegmentInput) -> dict:
        """The measured descriptors of one segment (also what the kinematic labels are made from)."""
        w = s.wrist_world
        steps = np.linalg.norm(np.diff(w, axis=0), axis=1)
        path = float(np.nansum(steps))
        d = w[-1] - w[0]
        net = float(np.linalg.norm(d))
        dur = float(max(s.t_s[-1] - s.t_s[0], 1e-3))
        sp = s.speed if np.isfinite(s.speed).sum() >= 2 else np.r_[steps / np.maximum(np.diff(s.t_s), 1e-3), 0]
        sp = np.nan_to_num(sp, nan=0.0)
        mean_sp = float(sp.mean())
        # speed profile: the speed in 5 equal-time bins, relative to the mean (the shape, not the scale)
        tt = (s.t_s - s.t_s[0]) / dur
        prof = np.array([sp[(tt >= a) & (tt <= b)].mean() if ((tt >= a) & (tt <= b)).any() else mean_sp
                         for a, b in zip(np.linspace(0, 1, _PROFILE_BINS + 1)[:-1],
                                         np.linspace(0, 1, _PROFILE_BINS + 1)[1:])]) / max(mean_sp, 1e-6)
        dir_w = d / net if net > 1e-6 else np.zeros(3)
        dc = s.displacement_cam if s.displacement_cam is not None else d
        ncam = float(np.linalg.norm(dc))
        dir_c = dc / ncam if ncam > 1e-6 else np.zeros(3)
        a0, a1 = _edges(s.aperture)
        f0, f1 = _edges(s.flexion_deg)
        return dict(hand=s.hand, duration_s=dur, path_m=path, net_m=net, straightness=net / max(path, 1e-6),
                    mean_speed=mean_sp, peak_ratio=float(sp.max()) / max(mean_sp, 1e-6), dir_world=dir_w,
                    dir_cam=dir_c, profile=prof,
                    aperture_change=0.0 if not np.isfinite(a1 - a0) else a1 - a0,
                    flexion_change=0.0 if not np.isfinite(f1 - f0) else f1 - f0)

    def one(self, s: SegmentInput) -> np.ndarray:
        r = self.raw(s)
        return np.array([
            1.0 if r["hand"] == "right" else 0.0, np.log(r["duration_s"]), np.log(r["path_m"] + 1e-3),
            r["straightness"], np.log(r["mean_speed"] + 1e-3), r["peak_ratio"], *r["dir_world"], *r["dir_cam"],
            *r["profile"], r["aperture_change"] * 100.0, r["flexion_change"] / 10.0], float)


# -- fitting and assigning -----------------------------------------------------------------------------

@dataclass
class SkillModel:
    """A fitted skill model; ``to_json``/``from_json`` keep it in the store."""

    embedder: str
    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    centers: np.ndarray          # (k, d) in scaled space
    labels: list[str]            # per skill_id
    pca_mean: np.ndarray
    pca_components: np.ndarray   # (2, d)
    seed: int
    n_fitted: int
    k_choice: dict = field(default_factory=dict)  # how k was chosen (silhouette per k)
    version: str = MODEL_VERSION

    @property
    def k(self) -> int:
        return len(self.centers)

    def scaled(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, float) - self.mean) / self.scale

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(skill_id, distance to its centre in scaled units) per row of embeddings ``x``."""
        if len(x) == 0:
            return np.zeros(0, int), np.zeros(0)
        d = np.linalg.norm(self.scaled(x)[:, None, :] - self.centers[None], axis=2)
        ids = d.argmin(axis=1)
        return ids, d[np.arange(len(x)), ids]

    def project(self, x: np.ndarray) -> np.ndarray:
        """The 2-D projection of the preview (a PCA fitted with the model)."""
        return (self.scaled(x) - self.pca_mean) @ self.pca_components.T if len(x) else np.zeros((0, 2))

    def to_json(self) -> dict:
        return {"version": self.version, "embedder": self.embedder, "feature_names": list(self.feature_names),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "centers": self.centers.tolist(),
                "labels": list(self.labels), "pca_mean": self.pca_mean.tolist(),
                "pca_components": self.pca_components.tolist(), "seed": self.seed, "n_fitted": self.n_fitted,
                "k_choice": self.k_choice}

    @classmethod
    def from_json(cls, d: dict) -> SkillModel:
        a = np.asarray
        return cls(d["embedder"], list(d["feature_names"]), a(d["mean"], float), a(d["scale"], float),
                   a(d["centers"], float).reshape(-1, len(d["mean"])), list(d["labels"]), a(d["pca_mean"], float),
                   a(d["pca_components"], float).reshape(-1, len(d["mean"])), int(d["seed"]),
                   int(d["n_fitted"]), d.get("k_choice") or {}, d.get("version", MODEL_VERSION))


def choose_k(xs: np.ndarray, seed: int, max_k: int = DEFAULT_MAX_SKILLS) -> tuple[int, dict]:
    """The number of clusters with the best silhouette over 2..max_k (1 when fewer than 3 segments)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(xs)
    n_distinct = len(np.unique(np.round(xs, 9), axis=0))
    if n < 3 or n_distinct < 2:
        return max(1, min(n, n_distinct)), {}
    scores = {}
    for k in range(2, min(max_k, n - 1, n_distinct) + 1):
        lab = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(xs)
        if len(set(lab)) < 2:
            continue
        scores[k] = float(silhouette_score(xs, lab))
    if not scores:
        return 1, {}
    best = max(scores.values())
    # the smallest k within 0.02 of the best silhouette: fewer, broader skills when they score alike
    k = min(k for k, v in scores.items() if v >= best - 0.02)
    return k, {str(kk): round(v, 4) for kk, v in scores.items()}


def fit(segs: list[SegmentInput], emb: Embedder | None = None, *, n_skills: int | None = None,
        seed: int = DEFAULT_SEED, max_k: int = DEFAULT_MAX_SKILLS) -> tuple[SkillModel, np.ndarray]:
    """Fit a skill model on ``segs`` (deterministic for a given seed and segment set, whatever their
    order). Returns the model and the embeddings (rows in the order of ``segs``)."""
    from sklearn.cluster import KMeans

    if not segs:
        raise ValueError("no valid segment to discover skills from")
    emb = emb or embedder()
    x = emb.embed(segs)
    order = sorted(range(len(segs)), key=lambda i: segs[i].key)  # the fit never depends on the input order
    xo = x[order]
    mean = xo.mean(axis=0)
    scale = xo.std(axis=0)
    scale[scale < 1e-9] = 1.0
    xs = (xo - mean) / scale
    if n_skills:
        k, k_choice = min(int(n_skills), len(segs)), {"set": int(n_skills)}
    else:
        k, k_choice = choose_k(xs, seed, max_k)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(xs)
    lab = km.labels_
    # canonical skill ids: by size (largest first), then by the first member's key
    rank = sorted(range(k), key=lambda c: (-(lab == c).sum(), int(np.flatnonzero(lab == c)[0])
                                           if (lab == c).any() else 10 ** 9))
    centers = km.cluster_centers_[rank]
    remap = {old: new for new, old in enumerate(rank)}
    lab = np.array([remap[v] for v in lab])
    segs_o = [segs[i] for i in order]
    labels = label_skills([[s for s, c in zip(segs_o, lab) if c == j] for j in range(k)])
    # 2-D projection for the preview: PCA of the scaled embeddings (SVD, sign fixed for determinism)
    pm = xs.mean(axis=0)
    if len(xs) >= 2:
        _, _, vt = np.linalg.svd(xs - pm, full_matrices=False)
        comps = vt[:2]
        comps = comps * np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    else:
        comps = np.zeros((0, xs.shape[1]))
    if len(comps) < 2:
        comps = np.vstack([comps, np.zeros((2 - len(comps), xs.shape[1]))])
    model = SkillModel(emb.name, list(emb.feature_names), mean, scale, centers, labels, pm, comps, seed,
                       len(segs), k_choice)
    return model, x


# -- labels --------------------------------------------------------------------------------------------

def _direction_word(v: np.ndarray) -> str:
    ax = int(np.abs(v).argmax())
    return _AXIS_WORDS[ax][0 if v[ax] > 0 else 1]


def kinematic_label(members: list[SegmentInput]) -> str:
    """'right hand: forward, close grasp' from the members' measured motion (majority of each part)."""
    hands = Counter(s.hand for s in members)
    hand = hands.most_common(1)[0][0] if len(hands) == 1 or hands.most_common(1)[0][1] > len(members) / 2 \
        else "either"
    raws = [KinematicEmbedder.raw(s) for s in members]
    motions = Counter(("in place" if r["net_m"] < 0.03 else _direction_word(r["dir_cam"])) for r in raws)
    grasp = Counter(("close grasp" if r["aperture_change"] < -_GRASP_APERTURE_M else
                     "open grasp" if r["aperture_change"] > _GRASP_APERTURE_M else "") for r in raws)
    parts = [motions.most_common(1)[0][0]]
    g = grasp.most_common(1)[0][0]
    if g:
        parts.append(g)
    return f"{hand} hand: " + ", ".join(parts)


def vlm_label(members: list[SegmentInput]) -> str | None:
    """'pour water' from the members' VLM captions (most common verb, then its most common object);
    None when no member was captioned by a vision-language model."""
    verbs = [(s.caption.get("details") or {}).get("verb") for s in members
             if s.caption.get("captioner") not in (None, "kinematic")]
    verbs = [v for v in verbs if v]
    if not verbs:
        return None
    verb = Counter(verbs).most_common(1)[0][0]
    objs = [(s.caption.get("details") or {}).get("object") for s in members
            if (s.caption.get("details") or {}).get("verb") == verb]
    objs = [o for o in objs if o]
    return f"{verb} {Counter(objs).most_common(1)[0][0]}" if objs else verb


def _speed_word(members: list[SegmentInput], all_speed_median: float) -> str:
    sp = np.median([KinematicEmbedder.raw(s)["mean_speed"] for s in members])
    return "fast" if sp > all_speed_median else "slow"


def label_skills(groups: list[list[SegmentInput]]) -> list[str]:
    """A readable, distinct label per group: the VLM verb/object when captioned by one, else the
    kinematic descriptors; duplicates are told apart by speed, then numbered."""
    labels = [(vlm_label(g) or kinematic_label(g)) if g else "empty" for g in groups]
    everyone = [s for g in groups for s in g]
    med = float(np.median([KinematicEmbedder.raw(s)["mean_speed"] for s in everyone])) if everyone else 0.0
    dup = Counter(labels)
    labels = [f"{lab}, {_speed_word(g, med)}" if dup[lab] > 1 and g else lab for lab, g in zip(labels, groups)]
    seen: Counter = Counter()
    out = []
    for lab in labels:
        seen[lab] += 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


# -- results -------------------------------------------------------------------------------------------

def assignments(model: SkillModel, segs: list[SegmentInput], x: np.ndarray) -> list[dict]:
    """One row per segment: partition_key, segment_id, hand, skill_id, skill_label, distance, x, y."""
    ids, dist = model.assign(x)
    xy = model.project(x)
    return [dict(partition_key=s.partition_key, segment_id=s.segment_id, hand=s.hand, skill_id=int(i),
                 skill_label=model.labels[int(i)], distance=float(d), proj_x=float(p[0]), proj_y=float(p[1]),
                 embedder=model.embedder, instruction=s.caption.get("instruction"))
            for s, i, d, p in zip(segs, ids, dist, xy)]


def skill_counts(rows: list[dict]) -> list[tuple[int, str, int]]:
    """(skill_id, label, segments) per skill present in ``rows``, by skill_id."""
    c = Counter((r["skill_id"], r["skill_label"]) for r in rows)
    return sorted(((i, lab, n) for (i, lab), n in c.items()))


def separation(model: SkillModel, x: np.ndarray) -> float | None:
    """Silhouette of the assignment in the scaled embedding space (None under 2 skills or 3 segments)."""
    ids, _ = model.assign(x)
    if len(set(ids.tolist())) < 2 or len(x) < 3:
        return None
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(model.scaled(x), ids))


def scatter_png(rows: list[dict], labels: list[str], width_in: float = 6.0, height_in: float = 4.0) -> bytes:
    """The 2-D projection of the segments' embeddings, coloured by skill (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_in, height_in), dpi=90)
    cmap = plt.get_cmap("tab10")
    for k, lab in enumerate(labels):
        pts = np.array([(r["proj_x"], r["proj_y"]) for r in rows if r["skill_id"] == k]).reshape(-1, 2)
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=28, color=cmap(k % 10), label=f"{k}: {lab} ({len(pts)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("segments by skill (2-D projection of the embeddings)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
