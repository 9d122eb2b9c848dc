"""Pure-Python core of ego_assets: no Dagster imports here (docs/architecture.md §4)."""
