"""The Dagster side of the settings (docs/architecture.md §10): every ``EGO_ASSETS_*`` setting is declared
once in :mod:`ego_assets.lib.settings` (type, default, meaning) and read from the environment of the
process (the code server, the run worker and every step pod load the definitions with the same
environment). This module gives the steps and sensors the one resource they take, ``ego``.

The resource is not configured with ``dg.EnvVar``: an ``EnvVar`` that is unset fails the resource,
while every setting has a default (lib/settings.py), and the CLI changes ``EGO_ASSETS_HOME`` in its own
process after the definitions are loaded. The resource reads the settings when used instead.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ego_assets.lib import settings
from ego_assets.lib.sources import default_sources_path
from ego_assets.lib.storage import Store


def runtime() -> str:
    """``local`` or ``k8s`` (EGO_ASSETS_RUNTIME)."""
    return settings.get("RUNTIME")


class EgoStorage(dg.ConfigurableResource):
    """The storage root and the settings. ``home`` empty means EGO_ASSETS_HOME (default ./.ego_assets),
    read when used."""

    home: str = ""

    def store(self) -> Store:
        return Store(self.home or settings.get("HOME"))

    def sources_path(self) -> str:
        return default_sources_path(self.store().home)

    def setting(self, name: str) -> Any:
        """A setting of lib/settings.py (``"DATASET_FPS"``), as the environment sets it now."""
        return settings.get(name)
