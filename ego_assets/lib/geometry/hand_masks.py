"""Hand masks for the odometry: features on the hands are dropped, because hands move on their own and
would be taken for camera motion."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib.arrow import vectors
from ego_assets.lib.geometry.pose_inputs import PoseInputError


class HandMasker:
    """Per-frame masks (uint8, 255 = hand) from the ``hand_tracks`` table: the convex hull of each hand's
    21 keypoints, grown by ``margin`` of its size plus ``margin_px`` (fingers stick out of a hull of
    joint centres, and motion blur smears them)."""

    def __init__(self, hand_tracks: pa.Table | None, size: tuple[int, int], margin: float = 0.2,
                 margin_px: float = 6.0):
        self.size = size
        self.margin, self.margin_px = margin, margin_px
        self._by_frame: dict[int, list[np.ndarray]] = {}
        if hand_tracks is None or hand_tracks.num_rows == 0:
            return
        for name in ("frame_index", "kp2d"):
            if name not in hand_tracks.column_names:
                raise PoseInputError(f"hand_tracks table: no {name!r} column")
        fi = hand_tracks.column("frame_index").to_numpy()
        kp = vectors(hand_tracks, "kp2d", 42, "hand_tracks", PoseInputError).reshape(-1, 21, 2)
        for f, k in zip(fi, kp):
            k = k[np.isfinite(k).all(1)]
            if len(k) >= 3:
                self._by_frame.setdefault(int(f), []).append(k)

    def __bool__(self) -> bool:
        return bool(self._by_frame)

    def hulls(self, frame_index: int) -> list[np.ndarray]:
        out = []
        for k in self._by_frame.get(frame_index, []):
            c = k.mean(0)
            ext = np.ptp(k, axis=0).max()
            d = k - c
            n = np.linalg.norm(d, axis=1, keepdims=True)
            grown = c + d * (1 + self.margin) + d / np.maximum(n, 1e-6) * self.margin_px
            out.append(grown if ext > 0 else k)
        return out

    def mask(self, frame_index: int) -> np.ndarray | None:
        import cv2

        hulls = self.hulls(frame_index)
        if not hulls:
            return None
        w, h = self.size
        m = np.zeros((h, w), np.uint8)
        for g in hulls:
            hull = cv2.convexHull(np.round(np.clip(g, -1e4, 1e4) * 16).astype(np.int32))
            cv2.fillConvexPoly(m, hull, 255, shift=4)
        return m
