"""Small images for the UI (asset metadata renders Markdown with inline images)."""

from __future__ import annotations

import base64
import io

import numpy as np


def md_image(data: bytes, alt: str = "preview", mime: str = "image/png") -> str:
    return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode()})"


def png(img_rgb: np.ndarray, max_side: int = 360) -> bytes:
    """Encode an RGB image as PNG, downscaled so its long side is at most ``max_side``."""
    import cv2

    h, w = img_rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        img_rgb = cv2.resize(img_rgb, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def jpeg(img_rgb: np.ndarray, max_side: int = 360, quality: int = 80) -> bytes:
    import cv2

    h, w = img_rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        img_rgb = cv2.resize(img_rgb, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()


def speed_curve(hand_world, segments, width_in: float = 6.0, height_in: float = 2.2) -> bytes:
    """World-frame wrist speed per hand over time, with the segment boundaries (the cut points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_in, height_in), dpi=80)
    colors = {"left": "tab:blue", "right": "tab:orange"}
    hw = hand_world.to_pydict() if hand_world is not None else {}
    for hand in ("left", "right"):
        idx = [i for i, h in enumerate(hw.get("hand", [])) if h == hand]
        if not idx:
            continue
        t = np.array([hw["t_s"][i] for i in idx], float)
        v = np.array([np.nan if hw["speed_mps"][i] is None else hw["speed_mps"][i] for i in idx], float)
        order = np.argsort(t)
        ax.plot(t[order], v[order], lw=1, color=colors[hand], label=f"{hand} wrist")
    seg = segments.to_pydict() if segments is not None else {}
    for i in range(len(seg.get("segment_id", []))):
        c = colors.get(seg["hand"][i], "gray")
        ax.axvline(seg["start_s"][i], color=c, lw=0.6, ls="--")
        ax.axvline(seg["end_s"][i], color=c, lw=0.6, ls=":")
    ax.set_xlabel("t (s)")
    ax.set_ylabel("speed (m/s)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7)
    else:  # no hand seen: say so on the plot rather than draw an empty legend
        ax.text(0.5, 0.5, "no hand tracked", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
