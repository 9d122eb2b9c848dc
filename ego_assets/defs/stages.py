"""What the model-driven assets share: the configured backend of a stage, its code version (changing
backend or model marks downstream stale in the UI) and the partition inputs every stage reads."""

from __future__ import annotations

from ego_assets.lib import backends


def backend_code_version(stage: str, asset_version: str = "1") -> str:
    return f"{asset_version}+{backends.backend_class(stage).code_version()}"


def calib_row(store, pk: str) -> dict:
    return store.read_table("calibrations", pk).to_pylist()[0]


def proxy(store, pk: str) -> str:
    return store.local_path("frames", pk, "proxy.mp4")


class LazyBackend:
    """The stage's configured backend, created on first use and then reused for every video of the
    step: a model loads once per run, and not at all when every video is up to date."""

    def __init__(self, stage: str, **kwargs):
        self.stage, self.kwargs, self._backend = stage, kwargs, None

    def __call__(self) -> backends.Backend:
        if self._backend is None:
            self._backend = backends.create(self.stage, **self.kwargs)
        return self._backend
