"""Backends of the model-driven stages (docs/architecture.md §6): one small interface per stage, several
implementations chosen by configuration.

A backend is a class with a ``name``, a ``version`` and the ``resources`` it needs. The asset's
``code_version`` is ``"<name>@<version>"``, so switching or upgrading a backend marks downstream assets
stale in the UI; its Kubernetes resources come from ``resources``.

Built-in backends live in the modules of ``BUILTIN_MODULES``, imported only when a stage's backend is
looked up, so heavy libraries never load with the Dagster definitions. A user plugs in a backend
(say HaWoR for ``hands``) without touching ego_assets, either with an entry point in the group
``ego_assets.backends`` or by naming its module in ``EGO_ASSETS_PLUGINS`` (comma-separated); the module
calls :func:`register` and the backend is then selected with ``EGO_ASSETS_HANDS_BACKEND=hawor``.

What each stage's backend implements and returns (typed results, checked on construction; every
registered backend, built-in or plugged in, must pass ``ego_assets_tests/lib/test_backend_conformance.py``):

=============  ============================================================  ==============================
stage          method                                                        returns
=============  ============================================================  ==============================
calibration    ``calibrate(video, proxy_path, frames, proxy_size, hints,      ``calibration_backends.
               progress=None, *, metadata=None, mask_fn=None)``              CalibrationResult``
hands          ``track(proxy_path, frames, calib, progress=None)``;          ``hands.backends.HandResult``
               a :class:`~ego_assets.lib.hands.backends.HandsBackend`        (``detect``:
               subclass writes only ``detect`` (same arguments)              ``HandDetections``)
poses          ``estimate(proxy_path, frames, clips, calib, hand_tracks,     ``geometry.odometry.PoseResult``
               progress=None, *, scene_depth=None)``
captions       ``caption(segments, hand_world, frames, proxy_path, calib,     ``captions.base.CaptionResult``
               camera_poses, out_dir, progress=None)``
=============  ============================================================  ==============================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, ClassVar, TypeVar

from ego_assets.lib import settings

STAGES = ("calibration", "hands", "poses", "captions")

# the default backend of each stage: declared with its setting (lib/settings.py)
DEFAULTS = {stage: settings.SETTINGS[f"{stage.upper()}_BACKEND"].default for stage in STAGES}

BUILTIN_MODULES = {
    "calibration": ["ego_assets.lib.geometry.calibration_backends"],
    "hands": ["ego_assets.lib.hands.backends"],
    "poses": ["ego_assets.lib.geometry.pose_backends"],
    "captions": ["ego_assets.lib.captions.backends"],
}

ENTRY_POINT_GROUP = "ego_assets.backends"


def env_var(stage: str) -> str:
    return settings.var(f"{stage.upper()}_BACKEND")


@dataclass(frozen=True)
class Resources:
    """What one step of a backend needs. ``gpu`` > 0 puts the step on a GPU node in Kubernetes."""

    gpu: int = 0
    cpu: float = 1.0
    memory_gib: float = 2.0
    gpu_memory_gib: float = 0.0


class Backend:
    """Base class of every backend. Subclasses set the class attributes and implement the stage's
    method (``calibrate``, ``track``, ``estimate`` or ``caption``: see each stage's module)."""

    stage: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[str]
    resources: ClassVar[Resources] = Resources()
    description: ClassVar[str] = ""

    @classmethod
    def code_version(cls) -> str:
        return f"{cls.name}@{cls.version}"


_REGISTRY: dict[str, dict[str, type[Backend]]] = {s: {} for s in STAGES}
_loaded: set[str] = set()

B = TypeVar("B", bound=type[Backend])


def register(stage: str, name: str | None = None) -> Callable[[B], B]:
    """Class decorator: ``@register("hands")`` on a :class:`Backend` subclass."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")

    def deco(cls: B) -> B:
        key = name or cls.name
        cls.stage = stage
        _REGISTRY[stage][key] = cls
        return cls

    return deco


def plugin_modules() -> list[str]:
    """The modules named in ``EGO_ASSETS_PLUGINS`` (comma-separated)."""
    return [m for m in (m.strip() for m in settings.get("PLUGINS").split(",")) if m]


def _load(stage: str) -> None:
    # plugin modules on every lookup (an import already done costs nothing), so that one named after
    # the first lookup still registers; built-ins and entry points once
    for mod in plugin_modules():
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise  # the plug-in itself imports something missing: its own error says what
            raise ModuleNotFoundError(f"EGO_ASSETS_PLUGINS names {mod!r}, which cannot be imported ({e}); "
                                      f"install it or fix the variable", name=e.name) from None
    if stage in _loaded:
        return
    _loaded.add(stage)
    for mod in BUILTIN_MODULES.get(stage, []):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a stage whose module is not written yet has no built-ins
            if e.name != mod:
                raise
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def available(stage: str) -> list[str]:
    _load(stage)
    return sorted(_REGISTRY[stage])


def configured_name(stage: str) -> str:
    return settings.get(f"{stage.upper()}_BACKEND")


def backend_class(stage: str, name: str | None = None) -> type[Backend]:
    """The backend class for ``stage``: ``name``, else ``EGO_ASSETS_<STAGE>_BACKEND``, else the default."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    _load(stage)
    name = name or configured_name(stage)
    try:
        return _REGISTRY[stage][name]
    except KeyError:
        raise LookupError(
            f"no {stage} backend named {name!r} (set by {env_var(stage)}); "
            f"available: {', '.join(sorted(_REGISTRY[stage])) or 'none'}"
        ) from None


def create(stage: str, name: str | None = None, **kwargs) -> Backend:
    return backend_class(stage, name)(**kwargs)
