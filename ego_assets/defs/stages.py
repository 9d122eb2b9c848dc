"""What the model-driven assets share: the configured backend of a stage, its code version (changing
backend or model marks downstream stale in the UI) and the partition inputs every stage reads."""

from __future__ import annotations

from ego_assets.lib import backends


def backend_code_version(stage: str, asset_version: str = "1") -> str:
    return f"{asset_version}+{backends.backend_class(stage).code_version()}"


def backend_name(stage: str) -> str:
    """The configured backend's name (an asset's parameter: another backend recomputes the video)."""
    return backends.backend_class(stage).name


def calib_row(store, pk: str) -> dict:
    return store.read_table("calibrations", pk).to_pylist()[0]


def proxy(store, pk: str) -> str:
    return store.local_path("frames", pk, "proxy.mp4")


# Backends already created in this process, by stage, configured backend class and options: a process that
# runs many one-video runs (the CLI, an in-process run worker) loads each model once.
_LOADED: dict[tuple, backends.Backend] = {}


class LazyBackend:
    """The stage's configured backend, created on first use and then reused by every video this process
    runs: a model loads once per process, and not at all when every video is up to date."""

    def __init__(self, stage: str, **kwargs):
        self.stage, self.kwargs = stage, kwargs

    def __call__(self) -> backends.Backend:
        key = (self.stage, backends.backend_class(self.stage),  # the configured class itself
               tuple(sorted((k, repr(v)) for k, v in self.kwargs.items())))
        if key not in _LOADED:
            _LOADED[key] = backends.create(self.stage, **self.kwargs)
        return _LOADED[key]
