"""Skill discovery on synthetic trajectories with known groups (ego_assets.lib.skills)."""

import json

import numpy as np
import pytest

from ego_assets.lib import schemas, skills

FPS = 30.0
# three known skills: (hand, unit direction in world/camera axes, distance m, duration s, aperture start->end)
GROUPS = {
    "reach_close": ("right", (0.0, 0.0, 1.0), 0.25, 1.0, (0.08, 0.02)),   # forward, grasp closes
    "slide_left": ("left", (-1.0, 0.0, 0.0), 0.20, 2.0, (0.05, 0.05)),    # to the left, grasp unchanged
    "lift_open": ("right", (0.0, -1.0, 0.0), 0.15, 0.6, (0.02, 0.08)),    # up, grasp opens
}


def synthetic_video(pk: str, plan: list[str], seed: int = 0, captioner: str = "kinematic",
                    verbs: dict | None = None):
    """(segments, hand_world, captions) tables of one video whose segments follow ``plan`` (group names)."""
    rng = np.random.default_rng(seed)
    segs, hw, caps = [], {k: [] for k in ("frame_index", "t_s", "hand", "joints_world", "wrist_pos_world",
                                          "wrist_rotvec_world", "finger_pose", "speed_mps", "segment_id",
                                          "observed")}, []
    frame = 0
    for sid, g in enumerate(plan):
        hand, d, dist, dur, (a0, a1) = GROUPS[g]
        dist *= rng.uniform(0.85, 1.15)
        dur *= rng.uniform(0.85, 1.15)
        n = max(4, int(dur * FPS))
        u = np.linspace(0, 1, n)
        s = 0.5 - 0.5 * np.cos(np.pi * u)  # bell-shaped speed
        start = rng.normal(0, 0.05, 3) + np.array([0.0, 0.1, 0.4])
        wrist = start + np.outer(s, np.asarray(d) * dist) + rng.normal(0, 0.002, (n, 3))
        t = (frame + np.arange(n)) / FPS
        speed = np.r_[np.linalg.norm(np.diff(wrist, axis=0), axis=1) * FPS, 0.0]
        ap = a0 + (a1 - a0) * s
        for i in range(n):
            j = np.tile(wrist[i], (21, 1))
            j[4] = wrist[i] + [0.03, 0.0, 0.05]
            j[8] = j[4] + [ap[i], 0.0, 0.0]
            hw["frame_index"].append(frame + i)
            hw["t_s"].append(t[i])
            hw["hand"].append(hand)
            hw["joints_world"].append(j.reshape(-1).tolist())
            hw["wrist_pos_world"].append(wrist[i].tolist())
            hw["wrist_rotvec_world"].append([0.0, 0.0, 0.0])
            hw["finger_pose"].append([0.0] * 45)
            hw["speed_mps"].append(float(speed[i]))
            hw["segment_id"].append(sid)
            hw["observed"].append(True)
        segs.append(dict(segment_id=sid, hand=hand, start_frame=frame, end_frame=frame + n - 1, start_s=t[0],
                         end_s=t[-1], path_length_m=dist, mean_speed_mps=dist / dur, valid=True))
        details = {"verb": (verbs or {}).get(g, g.split("_")[0]), "object": "cup"} if captioner != "kinematic" \
            else {"motion": g}
        caps.append(dict(segment_id=sid, hand=hand, instruction=f"{g} ({hand})", valid=True,
                         captioner=captioner, details=json.dumps(details)))
        frame += n + 5
    cols = lambda rows: {k: [r[k] for r in rows] for k in rows[0]}  # noqa: E731
    return (schemas.conform("segments", cols(segs), pk), schemas.conform("hand_world", hw, pk),
            schemas.conform("captions", cols(caps), pk))


def _inputs(n_videos=4, per_group=3, seed=0, **kw):
    segs, truth = [], []
    names = list(GROUPS)
    for v in range(n_videos):
        plan = [names[(v + i) % 3] for i in range(per_group * 3)]
        t = synthetic_video(f"vid-{v}", plan, seed=seed + v, **kw)
        segs += skills.segment_inputs(f"vid-{v}", *t)
        truth += plan
    return segs, truth


def _same_partition(a, b) -> bool:
    """Whether two labelings group the items identically (up to renaming)."""
    pairs = set(zip(a, b))
    return len(pairs) == len(set(a)) == len(set(b))


def test_recovers_known_groups_with_k_from_the_data():
    segs, truth = _inputs()
    assert len(segs) == 36
    model, x = skills.fit(segs)
    assert model.k == 3, model.k_choice
    ids, dist = model.assign(x)
    assert _same_partition(ids.tolist(), truth)
    assert np.all(dist >= 0)
    # labels from the kinematic descriptors: hand, main direction, grasp change
    by_group = {g: model.labels[i] for i, g in zip(ids, truth)}
    assert by_group == {"reach_close": "right hand: forward, close grasp", "slide_left": "left hand: left",
                        "lift_open": "right hand: up, open grasp"}
    assert skills.separation(model, x) > 0.5


def test_deterministic_and_order_independent():
    segs, _ = _inputs()
    m1, x1 = skills.fit(segs, seed=3)
    m2, x2 = skills.fit(list(reversed(segs)), seed=3)
    assert m1.labels == m2.labels
    np.testing.assert_allclose(m1.centers, m2.centers)
    r1 = {(r["partition_key"], r["segment_id"]): r["skill_id"] for r in skills.assignments(m1, segs, x1)}
    r2 = {(r["partition_key"], r["segment_id"]): r["skill_id"] for r in
          skills.assignments(m2, list(reversed(segs)), x2)}
    assert r1 == r2


def test_new_video_assigned_to_kept_model_after_json_round_trip():
    segs, _ = _inputs(n_videos=3)
    model, _ = skills.fit(segs)
    kept = skills.SkillModel.from_json(json.loads(json.dumps(model.to_json())))
    new = skills.segment_inputs("vid-new", *synthetic_video("vid-new", ["lift_open", "slide_left", "reach_close"],
                                                            seed=99))
    rows = skills.assignments(kept, new, skills.embedder().embed(new))
    assert [r["skill_label"] for r in rows] == ["right hand: up, open grasp", "left hand: left",
                                                "right hand: forward, close grasp"]
    assert kept.k == model.k and kept.labels == model.labels


def test_n_skills_set_and_vlm_labels():
    segs, truth = _inputs(captioner="vlm", verbs={"reach_close": "grab", "slide_left": "wipe",
                                                  "lift_open": "release"})
    model, x = skills.fit(segs, n_skills=3)
    assert model.k_choice == {"set": 3}
    ids, _ = model.assign(x)
    assert {g: model.labels[i] for i, g in zip(ids, truth)} == {
        "reach_close": "grab cup", "slide_left": "wipe cup", "lift_open": "release cup"}


def test_invalid_segments_and_na_captions_are_left_out():
    seg, hw, cap = synthetic_video("vid-x", ["reach_close", "slide_left", "lift_open"])
    seg = seg.set_column(seg.schema.get_field_index("valid"), "valid",
                         schemas.conform("segments", {"valid": [True, False, True]}, "vid-x")["valid"])
    cap = cap.set_column(cap.schema.get_field_index("valid"), "valid",
                         schemas.conform("captions", {"valid": [True, True, False]}, "vid-x")["valid"])
    got = skills.segment_inputs("vid-x", seg, hw, cap)
    assert [s.segment_id for s in got] == [0]


def test_unknown_embedder_is_named(monkeypatch):
    monkeypatch.setenv(skills.ENV_EMBEDDER, "videomae")
    with pytest.raises(ValueError, match="unknown skills embedder 'videomae'.*kinematic"):
        skills.embedder()
