"""Consistency figures of the hands stage on the real clips (no ground truth needed):

    .venv/bin/python benchmarks/hand_consistency.py [--clips DIR] [--fps 10] [--long-side 640] [--palm-every K]

Per clip of ``../shared/data`` (re-encoded as the frames stage does: 10 fps, long side 640 px, a 65 deg
pinhole: the clips carry no intrinsics, and none of the figures below depends on the focal length except
the metric ones, which scale with it):

* ``det``: share of frames with a hand; ``both``: share of frames with a left and a right hand;
  ``tracks``: number of tracks;
* ``bone CV raw``: bone-length stability of the per-frame lifts (``hand_detections``, grouped by
  track), the median over tracks and the 20 bones of the coefficient of variation (std / mean) of
  each bone's 3D length: a rigid hand has 0; the tracks themselves get one skeleton per track
  (its median bones), so their CV is 0 by construction and the price of that is ``reproj``;
* ``reproj px``: median distance between the final joints projected into the image and the
  landmarker's 2D keypoints (what the track skeleton, the smoothing and the lift cost in 2D);
* ``depth jit``: palm-depth jitter, the median over frames of |z_t - (z_t-1 + z_t+1) / 2| (mm) on
  consecutive observed frames of a track, and as a share of the depth;
* ``palm z``: median palm depth (m), for the scale of the two above;
* ``agree``: share of clear detections on which the network's left/right (label + 3D shape) and the
  image cues (thumb side, forearm side) name the same hand; ``contested``: share of detections in
  tracks where they disagree overall; ``check``: the ``handedness_cues_agree`` verdict;
* ``mirror``: the mirror test: the clip flipped horizontally must swap every label: the share of the
  original rows whose mirrored twin (same frame, wrist within 10 % of the image width of the mirrored
  position) carries the other label, and the share of rows that found a twin (``twin``);
* ``ms/f``: CPU ms per frame of the whole stage (noisy on a shared machine).

Nothing is tuned on these figures: they are the checks that a change did not make the hands less
rigid, less steady or less consistent; the absolute accuracy needs ground truth (see the README).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO.parent / "shared" / "data"
PALM = [0, 5, 9, 13, 17]


def pinhole(w: int, h: int, hfov_deg: float = 65.0) -> dict:
    f = (w / 2) / np.tan(np.radians(hfov_deg) / 2)
    return dict(fx=f, fy=f, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h, distortion_model="none",
                dist_coeffs=[], rect_fx=f, rect_fy=f, rect_cx=(w - 1) / 2, rect_cy=(h - 1) / 2)


def arrays(tracks):
    """(frame_index, hand, track_id, joints (N,21,3), kp2d (N,21,2), interpolated) of a tracks table."""
    n = tracks.num_rows
    return (np.asarray(tracks.column("frame_index").to_pylist()), np.asarray(tracks.column("hand").to_pylist()),
            np.asarray(tracks.column("track_id").to_pylist()),
            np.asarray(tracks.column("joints_cam").to_pylist(), float).reshape(n, 21, 3),
            np.asarray(tracks.column("kp2d").to_pylist(), float).reshape(n, 21, 2),
            np.asarray(tracks.column("interpolated").to_pylist(), bool))


def rigidity_and_jitter(tracks, detections, calib: dict) -> dict:
    """Bone-length CV per track of the raw lifts, reprojection of the final joints, and palm-depth
    jitter on consecutive observed frames."""
    from ego_assets.lib.hands.skeleton import bone_lengths

    fi, _, tid, J, kp, interp = arrays(tracks)
    cvs, jit, rel, z_all = [], [], [], []
    dt = np.asarray(detections.column("track_id").to_pylist())
    DJ = np.asarray(detections.column("joints_cam").to_pylist(), float).reshape(-1, 21, 3)
    for t in np.unique(dt[dt >= 0]):
        if (dt == t).sum() >= 3:
            L = bone_lengths(DJ[dt == t])
            cvs.append(np.median(L.std(0) / np.maximum(L.mean(0), 1e-9)))
    p = J[~interp] / J[~interp][..., 2:3]
    proj = p[..., :2] * [calib["fx"], calib["fy"]] + [calib["cx"], calib["cy"]]
    reproj = float(np.median(np.linalg.norm(proj - kp[~interp], axis=-1))) if len(p) else float("nan")
    for t in np.unique(tid):
        m = (tid == t) & ~interp
        if m.sum() < 3:
            continue
        z = J[m][:, PALM, 2].mean(1)
        f = fi[m]
        z_all.append(z)
        ok = (f[2:] - f[1:-1] == 1) & (f[1:-1] - f[:-2] == 1)
        d = np.abs(z[1:-1] - (z[:-2] + z[2:]) / 2)[ok]
        jit.extend(d.tolist())
        rel.extend((d / z[1:-1][ok]).tolist())
    return dict(bone_cv=float(np.median(cvs)) if cvs else float("nan"), reproj_px=reproj,
                depth_jitter_mm=1000 * float(np.median(jit)) if jit else float("nan"),
                depth_jitter_rel=float(np.median(rel)) if rel else float("nan"),
                palm_z_m=float(np.median(np.concatenate(z_all))) if z_all else float("nan"))


def mirror_agreement(orig, mirrored, width: int) -> tuple[float, float]:
    """(share of matched rows whose mirrored twin has the other label, share of rows matched)."""
    fo, ho, _, _, ko, io = arrays(orig)
    fm, hm, _, _, km, im = arrays(mirrored)
    swapped = matched = total = 0
    for i in np.flatnonzero(~io):
        total += 1
        cand = np.flatnonzero((fm == fo[i]) & ~im)
        if len(cand) == 0:
            continue
        wx = (width - 1) - ko[i, 0, 0]
        d = np.hypot(km[cand, 0, 0] - wx, km[cand, 0, 1] - ko[i, 0, 1])
        j = cand[np.argmin(d)]
        if d.min() > 0.1 * width:
            continue
        matched += 1
        swapped += int(hm[j] != ho[i])
    return (swapped / matched if matched else float("nan")), (matched / total if total else float("nan"))


def run_clip(backend, path: Path, tmp: Path, fps: float, long_side: int, mirror: bool = False):
    from hand_tracks import _frames, _write_proxy

    from ego_assets_tests.helpers.synth import sample_frames

    imgs, ts = sample_frames(path, fps=fps, long_side=long_side)
    if mirror:
        imgs = [np.ascontiguousarray(im[:, ::-1]) for im in imgs]
    proxy = tmp / f"{path.stem}_{int(mirror)}.mp4"
    _write_proxy(proxy, imgs, ts)
    h, w = imgs[0].shape[:2]
    c0 = time.process_time()
    res = backend.track(str(proxy), _frames(ts), pinhole(w, h))
    return res, pinhole(w, h), 1000 * (time.process_time() - c0) / len(ts)


def measure(backend, path: Path, tmp: Path, fps: float = 10.0, long_side: int = 640) -> dict:
    from ego_assets.lib.hands.checks import check_handedness_cues_agree

    res, calib, ms = run_clip(backend, path, tmp, fps, long_side)
    w = calib["width"]
    res_m, _, _ = run_clip(backend, path, tmp, fps, long_side, mirror=True)
    s = res.stats
    ok, agree, _ = check_handedness_cues_agree(res.detections)
    ok_m, agree_m, _ = check_handedness_cues_agree(res_m.detections)
    swap, twin = mirror_agreement(res.tracks, res_m.tracks, w)
    out = dict(clip=path.stem, frames=s["n_frames"], det=s["detection_rate"], both=s["both_hands_rate"],
               tracks=s.get("n_tracks", 0),
               agree=agree, contested=s.get("handedness_contested_fraction", float("nan")),
               check="pass" if ok else "FAIL", check_mirror="pass" if ok_m else "FAIL",
               mirror=swap, twin=twin, ms_per_frame=ms)
    out.update(rigidity_and_jitter(res.tracks, res.detections, calib))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=Path, default=DATA)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--long-side", type=int, default=640)
    ap.add_argument("--palm-every", type=int, default=None,
                    help="the backend's palm_every (default: the backend's default)")
    a = ap.parse_args()
    clips = sorted(a.clips.glob("*.mp4"))
    if not clips:
        sys.exit(f"no clips in {a.clips}")
    warnings.simplefilter("ignore")
    from ego_assets.lib.hands.backends import MediaPipeHands

    backend = MediaPipeHands() if a.palm_every is None else MediaPipeHands(palm_every=a.palm_every)
    print(f"palm_every={backend.palm_every}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for c in clips:
            rows.append(measure(backend, c, Path(d), a.fps, a.long_side))
    cols = [("clip", "clip", "{}"), ("frames", "frames", "{}"), ("det", "det", "{:.2f}"), ("both", "both", "{:.2f}"),
            ("tracks", "tracks", "{}"), ("bone CV raw", "bone_cv", "{:.3f}"), ("reproj px", "reproj_px", "{:.1f}"),
            ("depth jit mm", "depth_jitter_mm", "{:.1f}"), ("jit/z", "depth_jitter_rel", "{:.3f}"),
            ("palm z m", "palm_z_m", "{:.2f}"), ("agree", "agree", "{:.2f}"),
            ("contested", "contested", "{:.2f}"), ("check", "check", "{}"),
            ("check mirr.", "check_mirror", "{}"), ("mirror swap", "mirror", "{:.2f}"),
            ("twin", "twin", "{:.2f}"), ("ms/f", "ms_per_frame", "{:.0f}")]
    table = [[fmt.format(r[k]) if not (isinstance(r[k], float) and not np.isfinite(r[k])) else "-"
              for _, k, fmt in cols] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, (h, _, _) in enumerate(cols)]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(cols, widths)))
    for t in table:
        print("  ".join(x.rjust(w) for x, w in zip(t, widths)))
    all_swap = np.nanmean([r["mirror"] for r in rows])
    print(f"mirror test: {all_swap:.1%} of matched rows swap their label in the flipped video "
          f"(must be 100 %); load average {os.getloadavg()[0]:.1f} (timings are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
