"""Pure-Python core of ego_assets: no Dagster imports here (DESIGN §4)."""
