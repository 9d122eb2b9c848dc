"""The Dagster definitions: every asset, check, sensor and job of ego_assets."""

from __future__ import annotations

import warnings

import dagster as dg

# backfill_policy (beta) is how a run carries many videos (docs/architecture.md §7); its warning says nothing new.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from ego_assets.defs import actions, dataset, geometry, hands, ingest, skills  # noqa: E402 (after the filters)
from ego_assets.defs.catalog_views import catalog_views_asset
from ego_assets.defs.jobs import dataset_automation, dataset_job, per_video_job
from ego_assets.defs.k8s import executor
from ego_assets.defs.sensors import discover_videos
from ego_assets.defs.settings import EgoStorage

# In pipeline order (docs/architecture.md §1).
ASSET_MODULES = [ingest, geometry, hands, actions, skills, dataset]


def build_definitions() -> dg.Definitions:
    assets = [a for m in ASSET_MODULES for a in dg.load_assets_from_modules([m])]
    # the catalog step reads every table: it follows every asset
    assets.append(catalog_views_asset(sorted(k.to_user_string() for a in assets for k in a.keys)))
    return dg.Definitions(
        assets=assets,
        jobs=[per_video_job, dataset_job],
        sensors=[discover_videos, dataset_automation],
        resources={"ego": EgoStorage()},
        executor=executor(),
    )


defs = build_definitions()
