"""Catalog group: `catalog_views`, the one step that writes `<home>/catalog.duckdb` under Dagster (the
CLI is the other writer). Writers never open the catalog file: a user holding it open can make this
step fail, visibly and on its own, never a video's step after its data was committed."""

import dagster as dg

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.settings import EgoStorage

GROUP = "catalog"
ASSET = "catalog_views"
# Refreshed once the videos' runs (and the dataset assembly they trigger) have ended: not in the tick
# that requests the dataset, but at the next one, after it.
CATALOG_CONDITION = (dg.AutomationCondition.any_deps_updated().since_last_handled()
                     & ~dg.AutomationCondition.any_deps_in_progress()
                     & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
                     & ~dg.AutomationCondition.in_progress())


def catalog_views_asset(upstream: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name=ASSET, group_name=GROUP, code_version="1", deps=upstream, kinds={"duckdb"},
              op_tags=op_tags(None), pool=pool(None),
              automation_condition=CATALOG_CONDITION,
              description="One DuckDB view per table in <home>/catalog.duckdb (globs over the Parquet "
                          "files), refreshed after the videos' runs: open it with any DuckDB client.")
    def catalog_views(context: dg.AssetExecutionContext, ego: EgoStorage) -> dg.MaterializeResult:
        from ego_assets.lib import catalog

        store = ego.store()
        has_data = catalog.refresh(store)
        with_data = sorted(t for t, ok in has_data.items() if ok)
        return dg.MaterializeResult(metadata={
            "tables": dg.MetadataValue.md(", ".join(f"`{t}`" for t in with_data) or "none yet"),
            "tables_with_data": len(with_data),
            "path": catalog.catalog_path(store)})

    return catalog_views


def refreshed_by(result) -> bool:
    """Whether a run (an in-process result) refreshed the catalog: its `catalog_views` step materialized.
    It is the dataset job's last step, so the views it defined hold everything the run wrote (files
    written since are read through the views' globs)."""
    try:
        return result.success and bool(result.asset_materializations_for_node(ASSET))
    except Exception:  # noqa: BLE001 - a run without that step
        return False
