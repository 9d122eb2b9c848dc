"""Settings shared by the UI, the sensors, the steps and the CLI: all from the environment (docs/architecture.md §10)."""

from __future__ import annotations

import os

import dagster as dg

from ego_assets.lib.sources import default_sources_path
from ego_assets.lib.storage import Store, default_home


def runtime() -> str:
    rt = os.environ.get("EGO_ASSETS_RUNTIME", "local").strip() or "local"
    if rt not in ("local", "k8s"):
        raise ValueError(f"EGO_ASSETS_RUNTIME must be 'local' or 'k8s', got {rt!r}")
    return rt


class EgoStorage(dg.ConfigurableResource):
    """The storage root. Empty means EGO_ASSETS_HOME (default ./.ego_assets), read when used."""

    home: str = ""

    def store(self) -> Store:
        return Store(self.home or default_home())

    def sources_path(self) -> str:
        return default_sources_path(self.store().home)
