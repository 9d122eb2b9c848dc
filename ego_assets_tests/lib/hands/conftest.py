"""Fixtures of the hands tests: the real model (provisioned into a temp dir when the repo has none),
real-clip proxies, synthetic hands."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ego_assets.lib.hands import model as hand_model
from ego_assets_tests.helpers import synth
from scripts import provision_hand_model

REPO = Path(__file__).resolve().parents[3]
POUR_CLIP = REPO.parent / "shared" / "data" / "egoloc_pour_water_rgb.mp4"
WHEEL_DIRS = [provision_hand_model._cache_dir(), Path("/tmp/mpw")]


def find_wheel() -> Path | None:
    for d in WHEEL_DIRS:
        p = d / hand_model.WHEEL_FILENAME
        if p.is_file():
            return p
    return None


def _real_model(tmp_path_factory, variant: str) -> Path:
    try:
        return hand_model.resolve_model(variant=variant)
    except hand_model.HandModelError as e:
        reason = str(e)
    wheel = find_wheel()
    if wheel is None:
        pytest.skip(f"real hand model ({variant}) not available: {reason}; and no "
                    f"{hand_model.WHEEL_FILENAME} in {', '.join(map(str, WHEEL_DIRS))} to build it from "
                    f"(run `make setup`, which runs scripts/provision_hand_model.py)")
    dest = tmp_path_factory.mktemp("hand_model") / hand_model.VARIANTS[variant].filename
    return provision_hand_model.build_bundle(wheel, dest, hand_model.VARIANTS[variant].members)


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    return _real_model(tmp_path_factory, "full")


@pytest.fixture(scope="session")
def real_model_lite(tmp_path_factory) -> Path:
    return _real_model(tmp_path_factory, "lite")


def write_proxy(path: Path, images: list[np.ndarray], times: list[float], fps: int = 10) -> None:
    """An H.264 proxy as the frames stage writes it: time base 1/1000, pts = t_s * 1000."""
    synth.write_frames(path, images, fps=fps, times=times, codec_options={"crf": "18", "preset": "veryfast"})


frames_table = synth.frames_table


def make_real_proxy(dst: Path, start_s: float = 0.0, dur_s: float | None = None, fps: float = 10.0,
                    long_side: int = 640) -> np.ndarray:
    """Re-encode part of the real clip to a proxy (``fps``, long side ``long_side``); returns t_s."""
    if not POUR_CLIP.is_file():
        pytest.skip(f"real clip {POUR_CLIP} not found (shared test data is outside the repo)")
    return synth.real_proxy(POUR_CLIP, dst, start_s, dur_s, fps, long_side)


@pytest.fixture(scope="session")
def pour_proxy(tmp_path_factory) -> tuple[Path, pa.Table]:
    """5 s of the real clip (2.5-7.5 s: hands on the table, the right hand lifting the jar, pouring
    and putting it back) as a 640-px, 10 fps proxy (50 frames), and its frames table."""
    p = tmp_path_factory.mktemp("pour") / "proxy.mp4"
    times = make_real_proxy(p, start_s=2.5, dur_s=5.0)
    return p, frames_table(times)


def pinhole_calib(width: int = 640, height: int = 480, hfov_deg: float = 90.0, **extra) -> dict:
    f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    row = dict(fx=f, fy=f, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height,
               distortion_model="none", dist_coeffs=[], hfov_deg=hfov_deg, camera_motion="moving",
               method="test", rect_fx=f, rect_fy=f, rect_cx=(width - 1) / 2, rect_cy=(height - 1) / 2)
    row.update(extra)
    return row


@pytest.fixture(autouse=True)
def _no_user_model_env(monkeypatch):
    """Tests choose their model explicitly; a developer's EGO_ASSETS_HAND_MODEL must not leak in."""
    if os.environ.get(hand_model.MODEL_ENV):
        monkeypatch.delenv(hand_model.MODEL_ENV)


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for test modules (which should not import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(write_proxy=write_proxy, frames_table=frames_table, pinhole_calib=pinhole_calib,
                           make_real_proxy=make_real_proxy, find_wheel=find_wheel, POUR_CLIP=POUR_CLIP)
