"""Dagster wiring (DESIGN §4): partitions, sources and discovery, assets, checks, executors."""
