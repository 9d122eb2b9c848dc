"""A home with videos registered, as the discovery sensor leaves it (for tests that run videos directly)."""

from __future__ import annotations

from pathlib import Path

from ego_assets.lib.sources import Source, discover_file, list_files
from ego_assets.lib.storage import Store


def register_source(home: str | Path, src: Source) -> tuple[Store, list]:
    """Discover every file of ``src`` and register it in the home's store; the store and the discovered
    files (``partition_key``, ``record()``), in listing order."""
    found = [discover_file(src, u) for u in list_files(src)]
    store = Store(str(home))
    for d in found:
        store.register_video(d.partition_key, d.record())
    return store, found
