"""Compacted catalog segments: what lets a catalog query over N partitions read O(log N) files.

Every partition writes its own small Parquet file per table (``artifacts/<asset>/<pk>/<table>.parquet``,
``lineage/<asset>/<pk>/<run>.parquet``). Reading 10,000 of them from an object store is 10,000 round
trips per query. :func:`compact` (run by the catalog refresh, never by a query) copies the rows of the
files it has not seen into one new *segment* under ``<home>/catalog_segments/<table>/``, each row tagged
with the file it came from (``_source``, relative to the home), and records in ``manifest.json``
which segment holds each file's current rows and under which stamp (size and modification time/ETag)
it was read.

A reader (:func:`snapshot`) lists the table's files (one LIST, no reads) and compares them with the
manifest: files that are new or changed since are read directly; rows in segments of files that changed
or were deleted since are excluded by ``_source``. So a query is always exact, whether the last
compaction was a second or a day ago.

Segments are merged like a binary counter (a new segment absorbs the previous one while that one holds
at most twice its files): each file's rows are rewritten O(log N) times over its life, and a home of N
files has O(log N) segments. A replaced file's old rows are not rewritten at once: they are listed as
dead in their segment (excluded by readers) and dropped when that segment is next merged.

No library keeps a compacted copy of many small Parquet files on an fsspec filesystem (a table format
such as Delta/Iceberg would, with its own writer and catalog service): this is the small part of one we
need, written here.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ego_assets.lib.sources import file_stamp
from ego_assets.lib.storage import Store

SEGMENTS_DIR = "catalog_segments"
MANIFEST = "manifest.json"
SOURCE_COLUMN = "_source"  # in segments only: the file (relative to the home) a row came from


@dataclass
class Snapshot:
    """What a reader reads for one table, as paths relative to the home."""

    segments: dict[str, list[str]] = field(default_factory=dict)  # segment -> sources to exclude
    fresh: list[str] = field(default_factory=list)  # files whose rows are in no segment (or stale)

    @property
    def files(self) -> list[str]:
        return [*self.segments, *self.fresh]


def segment_dir(table: str) -> str:
    return f"{SEGMENTS_DIR}/{table}"


def _rel(store: Store, path: str) -> str:
    return path[len(store.root) + 1:]


def listing(store: Store, table: str) -> dict[str, str]:
    """The table's files (relative path -> stamp): one recursive listing of the folder above the glob's
    first wildcard (on S3 one LIST per 1,000 keys; a glob with a wildcard in the middle would list each
    partition's folder on its own: 10,000 requests at 10,000 partitions), filtered by the glob."""
    pattern = store.table_glob(table)
    prefix = pattern[:pattern.index("*")].rstrip("/")
    regex = re.compile(re.escape(pattern).replace(r"\*", "[^/]+"))
    try:
        found = store.fs.find(prefix, detail=True)
    except FileNotFoundError:
        return {}
    return {_rel(store, p): file_stamp(info) for p, info in found.items()
            if info.get("type") == "file" and regex.fullmatch(p)}


def read_manifest(store: Store, table: str) -> dict:
    path = store.join(segment_dir(table), MANIFEST)
    if not store.fs.exists(path):
        return {"files": {}, "segments": {}, "retired": []}
    try:
        return json.loads(store.read_bytes(path))
    except (ValueError, OSError) as e:
        raise ValueError(f"catalog manifest {store.url(path)} is unreadable ({e}); delete "
                         f"{store.url(store.join(segment_dir(table)))} to rebuild it") from None


def _plan(files: dict[str, str], manifest: dict) -> tuple[list[str], set[str]]:
    """(files to read, sources whose rows in a segment are no longer current)."""
    known = manifest["files"]
    fresh = sorted(p for p, st in files.items() if p not in known or known[p][0] != st)
    stale = {p for p, (st, _) in known.items() if files.get(p) != st}
    return fresh, stale


def snapshot(store: Store, table: str) -> Snapshot:
    manifest = read_manifest(store, table)
    files = listing(store, table)
    fresh, stale = _plan(files, manifest)
    segs = {}
    for name, seg in manifest["segments"].items():
        dead = sorted(set(seg["dead"]) | {p for p in stale if manifest["files"][p][1] == name})
        segs[f"{segment_dir(table)}/{name}"] = dead
    return Snapshot(segs, fresh)


def _read_files(store: Store, rels: list[str]) -> pa.Table | None:
    if not rels:
        return None
    paths = [store.join(r) for r in rels]
    blobs = store.fs.cat(paths, on_error="raise")  # object stores fetch these concurrently
    tables = []
    for rel, path in zip(rels, paths):
        t = pq.read_table(pa.BufferReader(blobs[path]))
        tables.append(t.append_column(SOURCE_COLUMN, pa.array([rel] * t.num_rows, pa.string())))
    return pa.concat_tables(tables, promote_options="permissive")


def compact(store: Store, table: str) -> dict:
    """Fold the files no segment holds yet into a new segment (merging older ones as the counter says).
    Returns what it did: files read, segments written/merged. Single writer: the catalog refresh."""
    manifest = read_manifest(store, table)
    files = listing(store, table)
    fresh, stale = _plan(files, manifest)
    known, segs = manifest["files"], manifest["segments"]
    out = {"read": len(fresh), "merged": 0, "segments": len(segs)}
    # segments retired by the previous compaction: no reader of the current manifest reads them
    for name in manifest.get("retired", []):
        if store.fs.exists(store.join(segment_dir(table), name)):
            store.fs.rm(store.join(segment_dir(table), name))
    manifest["retired"] = []
    if not fresh and not stale:
        store.write_json(store.join(segment_dir(table), MANIFEST), manifest)
        return out
    for p in stale:
        _, seg = known.pop(p)
        segs[seg]["dead"].append(p)
    parts = [_read_files(store, fresh)]
    n_files = len(fresh)
    # binary-counter merge: absorb the newest segments while they are at most twice the new one's size
    order = sorted(segs, key=lambda s: segs[s]["created"])
    while order and segs[order[-1]]["files"] - len(segs[order[-1]]["dead"]) <= 2 * max(n_files, 1):
        name = order.pop()
        t = store.read_parquet(store.join(segment_dir(table), name))
        dead = segs[name]["dead"]
        if dead:
            t = t.filter(pc.invert(pc.is_in(t[SOURCE_COLUMN], pa.array(dead, pa.string()))))
        parts.append(t)
        n_files += segs[name]["files"] - len(dead)
        manifest["retired"].append(name)
        del segs[name]
        out["merged"] += 1
    parts = [p for p in parts if p is not None and p.num_rows]
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    if parts:
        data = pa.concat_tables(parts, promote_options="permissive")
        buf = io.BytesIO()
        pq.write_table(data, buf, compression="zstd")
        store.write_bytes(store.join(segment_dir(table), name), buf.getvalue())
        sources = set(data[SOURCE_COLUMN].to_pylist())
    else:
        sources = set()
    for p, st in files.items():
        if p in sources or p in fresh:
            known[p] = [st, name]
    # a fresh file with no rows is known (not re-read) but holds nothing in the segment
    if parts:
        segs[name] = {"files": sum(1 for v in known.values() if v[1] == name), "dead": [],
                      "created": time.time_ns()}
    else:
        for p in fresh:
            known.pop(p, None)
    # the manifest last: until it is written, readers use the previous one (whose segments still exist)
    store.write_json(store.join(segment_dir(table), MANIFEST), manifest)
    out["segments"] = len(segs)
    return out


def held(store: Store, table: str) -> set[str]:
    """The files whose current rows a segment holds (as of the last compaction)."""
    return set(read_manifest(store, table)["files"])
