"""Skeleton overlay for the UI thumbnail of ``hand_tracks``."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa

from ego_assets.lib.hands.skeleton import BONES, PALM_LINKS

COLORS = {"left": (66, 135, 245), "right": (245, 130, 48)}  # RGB
OTHER = (200, 200, 200)


def _rows(rows) -> list[dict]:
    if isinstance(rows, pa.Table):
        return rows.to_pylist()
    return [dict(r) for r in rows]


def draw_skeletons(image_rgb: np.ndarray, rows: Iterable[dict] | pa.Table) -> np.ndarray:
    """A copy of ``image_rgb`` (HxWx3 uint8) with the 2D skeleton of each row drawn on it and a
    label (``L``/``R``, the handedness confidence when present) at the wrist. ``rows`` are
    ``hand_tracks`` rows (dicts or a table) of one frame, with ``kp2d`` (42 floats or 21x2, pixels)
    and ``hand``; interpolated rows are drawn thin."""
    import cv2

    img = np.ascontiguousarray(np.asarray(image_rgb, np.uint8).copy())
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image of shape {img.shape}: expected HxWx3 RGB")
    scale = max(img.shape[:2]) / 640.0
    for r in _rows(rows):
        kp = np.asarray(r["kp2d"], float).reshape(21, 2)
        if not np.isfinite(kp).all():
            continue
        color = COLORS.get(r.get("hand"), OTHER)
        thick = max(1, int(round((1 if r.get("interpolated") else 2) * scale)))
        pts = np.round(kp * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        for a, b in BONES + PALM_LINKS:
            cv2.line(img, tuple(map(int, pts[a])), tuple(map(int, pts[b])), color, thick, cv2.LINE_AA, 4)
        for p in pts:
            cv2.circle(img, tuple(map(int, p)), int(3 * scale * 16), (255, 255, 255), -1, cv2.LINE_AA, 4)
        hand = r.get("hand")
        label = {"left": "L", "right": "R"}.get(hand, "?")
        conf = r.get("handedness_conf")
        if conf is not None and np.isfinite(conf):
            label += f" {conf:.2f}"
        org = (int(kp[0, 0] + 6 * scale), int(kp[0, 1] + 14 * scale))
        cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), int(3 * scale) + 1,
                    cv2.LINE_AA)
        cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color, max(1, int(scale)),
                    cv2.LINE_AA)
    return img
