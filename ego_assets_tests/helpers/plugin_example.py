"""A backend plugged in the way a user plugs one in (``EGO_ASSETS_PLUGINS=ego_assets_tests.helpers.
plugin_example``): a module outside the built-ins that registers a class. The conformance test loads it
through that variable and holds it to the same contract as the built-ins."""

from __future__ import annotations

from ego_assets.lib.backends import Backend, Resources, register
from ego_assets.lib.geometry import calibration as cal
from ego_assets.lib.geometry.calibration_backends import CalibrationResult


@register("calibration")
class FixedFovCalibration(Backend):
    """A rig whose lens is known: a 70 deg horizontal field of view unless a hint says otherwise."""

    name = "example_fixed_fov"
    version = "1"
    resources = Resources(cpu=1, memory_gib=1.0)
    description = "pinhole at a fixed 70 deg field of view (an example plug-in)"

    def calibrate(self, video, proxy_path, frames, proxy_size, hints, progress=None, *, metadata=None,
                  mask_fn=None) -> CalibrationResult:
        hints = dict(hints or {})
        hints.setdefault("hfov_deg", 70.0)
        return CalibrationResult(self.name, cal.calibrate_prior(video, proxy_path, frames, proxy_size, hints,
                                                                progress, metadata, mask_fn))
