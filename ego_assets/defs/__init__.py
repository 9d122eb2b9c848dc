"""Dagster wiring (docs/architecture.md §4): partitions, sources and discovery, assets, checks, executors."""
