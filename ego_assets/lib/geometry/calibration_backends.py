"""Backends of the ``calibrations`` stage (registry: ``ego_assets.lib.backends``, stage "calibration").

Interface: ``calibrate(video, proxy_path, frames, proxy_size, hints, progress=None, *, metadata=None,
mask_fn=None) -> CalibrationResult``: one row of the CALIBRATIONS columns (without partition_key) and,
from a backend that measures it, the per-frame metric scene depth (see :class:`CalibrationResult`).

* ``prior`` (default, CPU): hints, container metadata or the egocentric field-of-view prior.
* ``depthpro`` (GPU): Apple's DepthPro through transformers estimates the field of view (when no hint
  gives the intrinsics) and metric depth; ``CalibrationResult.scene_depth`` (and the ``scene_depth``
  method, for a given calibration) is the per-frame metric depth that the pose stage takes as its scale cue.
* ``moge`` (GPU): MoGe-2 (package ``moge``, not a dependency of ego_assets) for the same.

Heavy libraries are imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from ego_assets.lib import settings
from ego_assets.lib.backends import Backend, Resources, register
from ego_assets.lib.geometry import calibration as cal
from ego_assets.lib.schemas import CALIBRATIONS

DEPTH_GRID = (32, 18)  # (w, h) of the coarse metric depth maps handed to the pose stage


class ModelUnavailableError(ValueError):
    """A model backend cannot run here: its package or weights are missing (the message says which)."""


class CalibrationResultError(ValueError):
    """A calibration backend returned a result that breaks the contract of :class:`CalibrationResult`."""


# the per-frame metric depth a depth backend hands to the pose stage (lib/geometry/stitch.py reads it)
SCENE_DEPTH_SCHEMA = pa.schema([
    pa.field("frame_index", pa.int32()),  # frames of the proxy, increasing
    pa.field("t_s", pa.float64()),
    pa.field("depth_m", pa.float64()),  # median metric depth of the frame, finite and > 0
    # optional, all three or none: a coarse metric depth map, row-major grid_h x grid_w (DEPTH_GRID)
    pa.field("depth_grid", pa.list_(pa.float32())),
    pa.field("grid_w", pa.int32()),
    pa.field("grid_h", pa.int32()),
])
_DEPTH_REQUIRED = ("frame_index", "t_s", "depth_m")
_DEPTH_GRID = ("depth_grid", "grid_w", "grid_h")


@dataclass(frozen=True)
class CalibrationResult:
    """What ``calibrate`` returns (the contract of the ``calibration`` stage; the conformance test
    checks every backend).

    ``calibration``: a one-row table with every column of ``schemas.CALIBRATIONS`` but
    ``partition_key`` (the wiring adds it with ``schemas.conform``). ``scene_depth``: None, or the
    per-frame metric depth in the columns of :data:`SCENE_DEPTH_SCHEMA` (``frame_index``, ``t_s``,
    ``depth_m`` required; ``depth_grid``/``grid_w``/``grid_h`` optional together), which becomes the
    metric scale of ``camera_poses``; an empty table is kept as None. Checked on construction:
    :class:`CalibrationResultError` names the backend and the field."""

    backend: str
    calibration: pa.Table
    scene_depth: pa.Table | None = None

    def _fail(self, field_: str, why: str):
        raise CalibrationResultError(f"calibration backend {self.backend!r}: calibrate() returned a bad "
                                     f"{field_!r}: {why}")

    def __post_init__(self):
        t = self.calibration
        if not isinstance(t, pa.Table) or t.num_rows != 1:
            self._fail("calibration", f"expected a one-row pyarrow Table, got "
                                      f"{t.num_rows if isinstance(t, pa.Table) else type(t).__name__} rows")
        missing = [f.name for f in CALIBRATIONS if f.name != "partition_key" and f.name not in t.column_names]
        if missing:
            self._fail("calibration", f"missing columns {missing}")
        d = self.scene_depth
        if d is None:
            return
        if not isinstance(d, pa.Table):
            self._fail("scene_depth", f"expected a pyarrow Table or None, got {type(d).__name__}")
        if d.num_rows == 0:
            object.__setattr__(self, "scene_depth", None)
            return
        missing = [c for c in _DEPTH_REQUIRED if c not in d.column_names]
        grid = [c for c in _DEPTH_GRID if c in d.column_names]
        if missing:
            self._fail("scene_depth", f"missing columns {missing}")
        if grid and len(grid) != len(_DEPTH_GRID):
            self._fail("scene_depth", f"depth_grid, grid_w and grid_h come together, got only {grid}")
        fi = d.column("frame_index").to_numpy(zero_copy_only=False)
        if len(fi) > 1 and np.any(np.diff(fi) <= 0):
            self._fail("scene_depth", "frame_index must be strictly increasing")
        dm = d.column("depth_m").to_numpy(zero_copy_only=False).astype(float)
        if not (np.isfinite(dm) & (dm > 0)).all():
            self._fail("scene_depth", "depth_m must be finite and > 0")
        if grid:
            n = np.asarray(d.column("grid_w").to_pylist()) * np.asarray(d.column("grid_h").to_pylist())
            sizes = np.asarray([len(g) if g is not None else -1 for g in d.column("depth_grid").to_pylist()])
            if not np.array_equal(n, sizes):
                self._fail("scene_depth", "each depth_grid must hold grid_w * grid_h values")
        try:
            keep = [f for f in SCENE_DEPTH_SCHEMA if f.name in d.column_names]
            object.__setattr__(self, "scene_depth", d.select([f.name for f in keep]).cast(pa.schema(keep)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            self._fail("scene_depth", f"columns do not cast to {SCENE_DEPTH_SCHEMA}: {e}")


@register("calibration")
class PriorCalibration(Backend):
    name = "prior"
    version = "1"
    resources = Resources(cpu=1, memory_gib=1.0)
    description = ("Intrinsics from camera hints, container metadata or a 90 deg egocentric FoV prior; "
                   "OpenCV fisheye/radtan undistortion; static-vs-moving from background KLT motion.")

    def calibrate(self, video: dict, proxy_path: str, frames: pa.Table, proxy_size: tuple[int, int],
                  hints: dict | None, progress: Callable[[int, int], None] | None = None, *,
                  metadata: dict | None = None,
                  mask_fn: Callable[[int], np.ndarray | None] | None = None) -> CalibrationResult:
        return CalibrationResult(self.name, cal.calibrate_prior(video, proxy_path, frames, proxy_size, hints,
                                                                progress, metadata, mask_fn))


class _MonocularGeometryCalibration(Backend):
    """Shared logic of the model backends: run the model on sampled (rectified) proxy frames, take the
    median field of view when nothing better is known, and keep coarse depth maps per sampled frame.

    Depth is kept in "unit focal" form (the depth for f/W = 1): metric depth is that times f/W, so it
    follows whichever focal length the calibration settles on (a hint's, or the model's own)."""

    resources = Resources(gpu=1, cpu=4, memory_gib=16.0, gpu_memory_gib=8.0)

    def __init__(self, model_path: str | None = None, device: str | None = None, n_fov_frames: int = 8,
                 depth_every: int = 10):
        self.model_path = model_path
        self.device = device
        self.n_fov_frames = n_fov_frames
        self.depth_every = max(1, int(depth_every))
        self._loaded = None

    # subclasses: load() -> anything; infer(rgb HxWx3 uint8) -> (hfov_deg or None, unit depth HxW)
    def load(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def infer(self, rgb: np.ndarray) -> tuple[float | None, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _model(self):
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded

    def _torch_device(self):
        import torch

        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _sample(self, proxy_path: str, frames: pa.Table, undistort, with_fov: bool,
                progress: Callable[[int, int], None] | None):
        """One decoding pass: the model on every ``depth_every``-th frame, plus evenly spread frames for
        the field of view. Returns (fovs, rows of (frame_index, t_s, unit median depth, unit grid))."""
        import cv2

        from ego_assets.lib.video import iter_frames

        fi = frames.column("frame_index").to_numpy()
        t = frames.column("t_s").to_numpy()
        n = len(fi)
        want = set(range(0, n, self.depth_every))
        if with_fov:
            want |= set(np.linspace(0, n - 1, min(self.n_fov_frames, n)).round().astype(int).tolist())
        fovs, rows = [], []
        # load first: the model's imports (torchvision) may switch libav logging on, which iter_frames
        # (video.open_av) switches off again when it opens the proxy
        self._model()
        stop = max(want) + 1 if want else 0
        done = 0
        for i, _, rgb in iter_frames(proxy_path, 0, stop):
            if i not in want:
                continue
            if undistort is not None:
                rgb = undistort(rgb)
            fov, unit = self.infer(rgb)
            if fov is not None:
                fovs.append(float(fov))
            unit = np.where(np.isfinite(unit) & (unit > 0), unit, np.nan).astype(np.float32)
            med = float(np.nanmedian(unit)) if np.isfinite(unit).any() else float("nan")
            grid = cv2.resize(np.nan_to_num(unit, nan=med), DEPTH_GRID, interpolation=cv2.INTER_AREA)
            rows.append((int(fi[i]), float(t[i]), med, grid.ravel()))
            done += 1
            if progress:
                progress(done, len(want))
        return fovs, rows

    @staticmethod
    def _depth_table(rows, f_over_w: float) -> pa.Table:
        gw, gh = DEPTH_GRID
        return pa.table(dict(
            frame_index=pa.array([r[0] for r in rows], pa.int32()),
            t_s=pa.array([r[1] for r in rows], pa.float64()),
            depth_m=pa.array([r[2] * f_over_w for r in rows], pa.float64()),
            depth_grid=pa.array([(r[3] * f_over_w).astype(np.float32) for r in rows], pa.list_(pa.float32())),
            grid_w=pa.array([gw] * len(rows), pa.int32()),
            grid_h=pa.array([gh] * len(rows), pa.int32()),
        ))

    def calibrate(self, video: dict, proxy_path: str, frames: pa.Table, proxy_size: tuple[int, int],
                  hints: dict | None, progress: Callable[[int, int], None] | None = None, *,
                  metadata: dict | None = None,
                  mask_fn: Callable[[int], np.ndarray | None] | None = None) -> CalibrationResult:
        """Hints or metadata when they give intrinsics (the model's depth then uses that focal length),
        else the model's median field of view; metric depth per sampled frame in ``scene_depth``."""
        cal.frames_count(frames)
        cal._check_size(proxy_size)
        tags = dict(video.get("metadata") or {})
        tags.update(metadata or cal.read_container_metadata(video.get("local_path") or video.get("uri")))
        known = (cal.intrinsics_from_hints(hints, proxy_size, cal.source_size(video))
                 or cal.intrinsics_from_metadata(tags, proxy_size))
        und = cal.undistorter(cal._as_row(known, cal.rectified_intrinsics(known))) if known else None
        fovs, rows = self._sample(proxy_path, frames, und, with_fov=known is None, progress=progress)
        intr = known or fov_intrinsics(fovs, proxy_size, self.name)
        rect = cal.rectified_intrinsics(intr)
        depth = self._depth_table(rows, rect[0] / proxy_size[0])
        motion = cal.classify_camera_motion(proxy_path, frames.num_rows, mask_fn=mask_fn,
                                            undistort=cal.undistorter(cal._as_row(intr, rect)))
        return CalibrationResult(self.name, cal.calibration_table(intr, motion, rect), depth)

    def scene_depth(self, proxy_path: str, frames: pa.Table, calib_row: dict,
                    progress: Callable[[int, int], None] | None = None) -> pa.Table:
        """Metric depth (median and a coarse grid) of every ``depth_every``-th frame for a given
        calibration: frame_index, t_s, depth_m, depth_grid, grid_w, grid_h."""
        K = cal.camera_matrix(calib_row)
        _, rows = self._sample(proxy_path, frames, cal.undistorter(calib_row), False, progress)
        return self._depth_table(rows, float(K[0, 0]) / int(calib_row["width"]))


def fov_intrinsics(fovs: list[float], proxy_size: tuple[int, int], model: str) -> cal.Intrinsics:
    """Pinhole intrinsics from per-frame field-of-view estimates: their median if it is plausible, else
    the egocentric prior (the method string says which, and why)."""
    lo, hi = cal.ALLOWED_HFOV_RANGE_DEG
    good = [f for f in fovs if np.isfinite(f) and lo <= f <= hi]
    if len(good) >= max(1, len(fovs) // 2):
        return cal.pinhole_from_hfov(float(np.median(good)), *proxy_size, method=model)
    prior = cal.prior_intrinsics(proxy_size)
    why = "no_fov" if not fovs else f"fov_rejected({np.median(fovs):.0f}deg)"
    return cal.Intrinsics(prior.fx, prior.fy, prior.cx, prior.cy, prior.width, prior.height,
                          method=f"{prior.method}+{model}:{why}")


@register("calibration")
class DepthProCalibration(_MonocularGeometryCalibration):
    name = "depthpro"
    version = "1"
    description = ("Apple DepthPro (transformers): field of view and metric depth; weights from "
                   "EGO_ASSETS_DEPTHPRO_MODEL or the Hugging Face cache (apple/DepthPro-hf), never downloaded.")
    MODEL_ID = "apple/DepthPro-hf"
    SETTING = "DEPTHPRO_MODEL"
    ENV = settings.var(SETTING)

    def source(self) -> str:
        return self.model_path or settings.get(self.SETTING) or self.MODEL_ID

    def load(self):
        from ego_assets.lib.extras import MissingExtraError, require

        try:
            for module in ("torch", "transformers"):
                require(module, "gpu", "the depthpro calibration backend")
        except MissingExtraError as e:
            raise ModelUnavailableError(str(e)) from None
        import torch

        try:
            from transformers import DepthProForDepthEstimation
        except ImportError as e:
            raise ModelUnavailableError(f"depthpro: transformers with DepthPro support is needed ({e})") from None
        src = self.source()
        device = self._torch_device()
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            model = DepthProForDepthEstimation.from_pretrained(src, local_files_only=True, dtype=dtype)
            processor = _depthpro_processor(src)
        except (OSError, ValueError) as e:
            raise ModelUnavailableError(
                f"depthpro: no weights at {src!r} (set {self.ENV} to a local folder, or put {self.MODEL_ID} "
                f"in the Hugging Face cache, e.g. `huggingface-cli download {self.MODEL_ID}`; nothing is "
                f"downloaded at run time): {e}") from None
        model.to(device).eval()
        return model, processor, device, dtype

    def infer(self, rgb: np.ndarray) -> tuple[float | None, np.ndarray]:
        """(horizontal FoV in degrees or None, depth for f/W = 1 at the frame's size). DepthPro predicts
        canonical inverse depth; metric depth is (f/W) / prediction (as its post-processing does)."""
        import torch

        model, processor, device, dtype = self._model()
        inputs = processor(images=rgb, return_tensors="pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"].to(device, dtype))
        inv = out.predicted_depth.float()[:, None]
        inv = torch.nn.functional.interpolate(inv, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        unit = 1.0 / inv[0, 0].clamp(min=1e-4, max=1e4)
        fov = out.field_of_view
        fov = None if fov is None else float(fov.float().reshape(-1)[0])
        return fov, unit.cpu().numpy()


def _depthpro_processor(src: str):
    try:
        from transformers import DepthProImageProcessorFast as P  # needs torchvision

        return P.from_pretrained(src, local_files_only=True)
    except ImportError:
        from transformers import DepthProImageProcessor as P

        return P.from_pretrained(src, local_files_only=True)


@register("calibration")
class MoGeCalibration(_MonocularGeometryCalibration):
    name = "moge"
    version = "2"
    description = ("MoGe-2 (package `moge`, installed by the user): field of view and metric depth; weights "
                   "from EGO_ASSETS_MOGE_MODEL or the Hugging Face cache (Ruicheng/moge-2-vitl-normal).")
    MODEL_ID = "Ruicheng/moge-2-vitl-normal"
    SETTING = "MOGE_MODEL"
    ENV = settings.var(SETTING)

    def load(self):
        try:
            from moge.model.v2 import MoGeModel
        except ImportError:
            raise ModelUnavailableError(
                "moge: the MoGe-2 package is not installed (pip install git+https://github.com/microsoft/MoGe.git); "
                "use the 'depthpro' or 'prior' calibration backend instead") from None
        src = self.model_path or settings.get(self.SETTING) or self.MODEL_ID
        if not os.path.exists(src):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the cache only: nothing is downloaded
        device = self._torch_device()
        try:
            model = MoGeModel.from_pretrained(src).to(device).eval()
        except Exception as e:  # noqa: BLE001 - any failure to find weights is the same message
            raise ModelUnavailableError(f"moge: cannot load weights from {src!r}: {e}") from None
        return model, device

    def infer(self, rgb: np.ndarray) -> tuple[float | None, np.ndarray]:
        import torch

        model, device = self._model()
        x = torch.tensor(rgb / 255.0, dtype=torch.float32, device=device).permute(2, 0, 1)
        with torch.no_grad():
            out = model.infer(x)
        fx_norm = float(out["intrinsics"][0, 0])  # focal / width
        depth = out["depth"].float().cpu().numpy()
        fov = float(np.degrees(2 * np.arctan(0.5 / fx_norm))) if fx_norm > 0 else None
        return fov, depth / fx_norm if fx_norm > 0 else depth
