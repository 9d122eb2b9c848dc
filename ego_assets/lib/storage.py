"""One storage module for the whole project (docs/architecture.md §5).

Layout under the storage root ``<home>`` (a local path or an fsspec URL such as ``s3://bucket/prefix``)::

    artifacts/<asset>/<partition_key>/...   media and per-partition Parquet tables (<table>.parquet)
    lineage/<asset>/<partition_key>/<stamp>-<run>.parquet   one row per asset materialization attempt
    quality/<asset>/<partition_key>/<check>.parquet          the latest result of each check
    registry/<partition_key>.json            where a partition's video is (written at discovery)
    datasets/<name>/                         LeRobot datasets
    catalog.duckdb                           views over the Parquet tables (see catalog.py)

Writes are atomic. A partition of an asset is written into a staging folder and committed in one step
(a directory rename locally; on object stores, where each file is one atomic PUT: media first, tables
next, a commit marker last, see ``Store._commit_object_store``), so readers never see half a
partition, and a step killed at any moment leaves only leftovers that the next writer removes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ego_assets.lib import schemas, settings
from ego_assets.lib.parallel import pid_alive
from ego_assets.lib.keys import check_key, file_sha256

DEFAULT_HOME = settings.SETTINGS["HOME"].default


def default_home() -> str:
    return settings.get("HOME")


def table_file(table: str) -> str:
    return f"{table}.parquet"


class StorageError(RuntimeError):
    pass


@dataclass
class PartitionWriter:
    """Collects one asset partition's files in a local staging folder; committed by the store.

    Each table written is kept (``tables``) with the SHA-256 of its file (``digests``), hashed as it is
    written: the runner takes the partition's data version and its checks' input from here, and reads
    nothing back."""

    staging: Path
    tables: dict[str, pa.Table] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> str:
        """A local path to write ``name`` into (sub-folders allowed)."""
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return str(p)

    def write_table(self, table: str, data: pa.Table) -> str:
        if data.schema.names != schemas.TABLES[table].schema.names:
            raise StorageError(f"table {table!r} does not match its schema; use schemas.conform()")
        p = self.path(table_file(table))
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, compression="zstd")
        buf = sink.getvalue()
        with open(p, "wb") as f:
            f.write(buf)
        self.digests[table] = hashlib.sha256(buf).hexdigest()
        self.tables[table] = data
        return p


COMMIT_MARKER = ".commit"  # object stores: written last by a commit (a manifest of its files)


def _writer_alive(name: str) -> bool:
    """Whether the process that made a staging folder ``<key>.<pid>-<uuid>`` still runs (this host)."""
    try:
        pid = int(name.rsplit(".", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False  # our own leftovers (an earlier attempt in this process) are stale
    return pid_alive(pid)


def _fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_size, file_sha256(None, path)


def lineage_stamp(t: float) -> str:
    """A lineage file's name prefix: UTC time ``t`` to the microsecond, so that the names sort as the
    attempts were made (``Store.lineage`` reads them in that order; its last row is the latest attempt).
    One clock reading, split in whole microseconds: the seconds and the fraction read apart (or a
    fraction rounded up to 1.000000) gave an attempt made at a second's turn a name that sorted before
    the attempts of the second before it."""
    us = int(round(t * 1_000_000))
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(sec)) + f".{frac:06d}"


class Store:
    def __init__(self, home: str | None = None):
        self.home = str(home or default_home())
        local = fsspec.utils.get_protocol(self.home) in ("file", "local")
        # Object stores: no listing cache. Other pods write under the same root, and the code server
        # (sensors) lives for days: a cached listing would hide their partitions. The endpoint and
        # credentials come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
        self.fs, root = fsspec.core.url_to_fs(self.home, **({} if local else {"use_listings_cache": False}))
        self.is_local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        self.root = str(Path(root).resolve()) if self.is_local else root.rstrip("/")
        self.protocol = None if self.is_local else (
            self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol)

    # -- paths ----------------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        """A path usable by other tools (DuckDB, users): plain path locally, protocol URL otherwise."""
        return path if self.is_local else f"{self.protocol}://{path}"

    def artifact_dir(self, asset: str, pk: str) -> str:
        return self.join("artifacts", asset, check_key(pk))

    def artifact(self, asset: str, pk: str, name: str) -> str:
        return f"{self.artifact_dir(asset, pk)}/{name}"

    def table_path(self, table: str, pk: str) -> str:
        return self.artifact(schemas.TABLES[table].asset, pk, table_file(table))

    def table_glob(self, table: str) -> str:
        spec = schemas.TABLES[table]
        if table in ("lineage", "quality"):
            return self.join(table, "*", "*", "*.parquet")
        return self.join("artifacts", spec.asset, "*", table_file(table))

    def datasets_dir(self, name: str = "") -> str:
        return self.join("datasets", name) if name else self.join("datasets")

    # -- small files ----------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic single-file write (temp + rename locally; one PUT on object stores)."""
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def table_digest(self, table: str, pk: str) -> str:
        """The SHA-256 of a committed table's file (as :class:`PartitionWriter` records it when written)."""
        return hashlib.sha256(self.read_bytes(self.table_path(table, pk))).hexdigest()

    def write_json(self, path: str, obj) -> None:
        self.write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def read_json(self, path: str):
        return json.loads(self.read_bytes(path))

    def write_parquet(self, path: str, data: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(data, buf, compression="zstd")
        self.write_bytes(path, buf.getvalue())

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open(path, "rb") as f:
            # one file: ParquetFile, not read_table (which goes through pyarrow.dataset and imports
            # pandas: seconds in a fresh process, ~10 ms a file after)
            return pq.ParquetFile(f).read(columns=columns)

    # -- tables ---------------------------------------------------------------------------------
    def read_table(self, table: str, pk: str, columns: list[str] | None = None) -> pa.Table:
        path = self.table_path(table, pk)
        if not self.fs.exists(path):
            raise FileNotFoundError(f"table {table!r} of partition {pk!r} is not materialized ({path})")
        return self.read_parquet(path, columns)

    def has_table(self, table: str, pk: str) -> bool:
        return self.fs.exists(self.table_path(table, pk))

    def local_path(self, asset: str, pk: str, name: str) -> str:
        """A local file path for an artifact (downloaded into a cache on object stores)."""
        path = self.artifact(asset, pk, name)
        if self.is_local:
            if not os.path.exists(path):
                raise FileNotFoundError(f"artifact {name!r} of {asset}/{pk} is missing ({path})")
            return path
        info = self.fs.info(path)
        tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("size"))
        cache = Path(tempfile.gettempdir()) / "ego_assets_cache" / asset / pk
        local = cache / f"{tag.strip(chr(34))}-{name.replace('/', '_')}"
        if not local.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = local.with_suffix(".part")
            self.fs.get_file(path, str(tmp))
            os.replace(tmp, local)
        return str(local)

    @contextmanager
    def working_copy(self, path: str, *, publish_last: tuple[str, ...] = (),
                     readonly: bool = False) -> Iterator[str]:
        """A local folder holding the store folder ``path``, for tools that need a filesystem (the
        LeRobot writer, its loader). Local stores: the folder itself. Object stores: a fresh download;
        when the block ends without an error, new and changed files are uploaded, files under
        ``publish_last`` prefixes (e.g. ``meta/``: what readers open first) after all the others, and
        files deleted locally are deleted from the store last. On an error, or when ``readonly``,
        nothing is uploaded."""
        if self.is_local:
            if not readonly:
                os.makedirs(path, exist_ok=True)
            yield path
            return
        local = Path(tempfile.mkdtemp(prefix="ego_assets_wc_"))
        try:
            before: dict[str, tuple[int, str]] = {}
            remote = path.rstrip("/")
            for rp in self.fs.find(remote) if self.fs.exists(remote) else []:
                rel = rp[len(remote) + 1:]
                dst = local / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(rp, str(dst))
                if not readonly:  # what the upload compares against
                    before[rel] = _fingerprint(dst)
            yield str(local)
            if readonly:
                return
            after = {str(f.relative_to(local)): _fingerprint(f) for f in local.rglob("*") if f.is_file()}
            changed = [r for r, fp in after.items() if before.get(r) != fp]
            last = [r for r in changed if r.startswith(publish_last)] if publish_last else []
            for rel in [r for r in changed if r not in last] + last:
                self.fs.put_file(str(local / rel), f"{remote}/{rel}")
            for rel in sorted(set(before) - set(after)):
                self.fs.rm_file(f"{remote}/{rel}")
        finally:
            shutil.rmtree(local, ignore_errors=True)

    # -- atomic partition commits ---------------------------------------------------------------
    def _scratch(self) -> Path:
        if self.is_local:
            return Path(self.root) / ".staging"
        return Path(tempfile.gettempdir()) / "ego_assets_staging"

    def clean_stale(self, asset: str, pk: str) -> int:
        """Remove leftovers of earlier, killed writers of this partition. Returns how many."""
        n = 0
        for base in (self._scratch() / asset, self._scratch() / ".trash" / asset):
            if base.exists():
                for p in base.glob(f"{check_key(pk)}.*"):
                    if _writer_alive(p.name):
                        continue  # another run is writing this partition right now: not a leftover
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
        return n

    @contextmanager
    def write_partition(self, asset: str, pk: str) -> Iterator[PartitionWriter]:
        """Stage every file of one asset partition, then replace the committed partition at once.
        On an exception nothing is committed and the staging folder is removed."""
        self.clean_stale(asset, pk)
        staging = self._scratch() / asset / f"{check_key(pk)}.{os.getpid()}-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True)
        try:
            yield PartitionWriter(staging)
            self._commit(staging, asset, pk)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, staging: Path, asset: str, pk: str) -> None:
        final = self.artifact_dir(asset, pk)
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if os.path.exists(final):
                trash = self._scratch() / ".trash" / asset / f"{pk}.{uuid.uuid4().hex[:12]}"
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.rename(final, trash)
                os.rename(staging, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(staging, final)
            return
        self._commit_object_store(staging, final)

    def _commit_object_store(self, staging: Path, final: str) -> None:
        """Object stores have no rename and no multi-object transaction; each PUT is atomic (a
        multipart upload becomes visible only when completed). The commit is ordered so that a reader
        never finds tables whose media are missing, nor tables of two commits side by side:

        1. an existing partition is hidden first: its marker, then its tables, are deleted (a
           reader now finds it not materialized rather than half replaced);
        2. media are uploaded; 3. tables are uploaded (readers, the catalog's globs included, find a
           partition through its tables); 4. the marker (a manifest of the files) is written: the
           commit point of :meth:`committed`; 5. files of earlier commits that are not in the
           manifest are deleted.

        Between 3 and 4 an asset with several tables may show some of them: a reader that needs all
        of a partition's tables together asks :meth:`committed` (the runner's lineage row, written
        after the commit, says the same). A reader that had read a table before 1 and fetches media
        after 2 gets the new media: only a versioned layout would avoid that, and Dagster does not
        run a step while its upstream partition is being rewritten.

        A writer killed at any point leaves either the old partition untouched (before 1), or a
        partition that is not committed (no marker) which the next writer replaces, or a committed
        partition with stale extra files that the next commit removes."""
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        rels = [p.relative_to(staging).as_posix() for p in files]
        tables = {table_file(t) for t in schemas.TABLES}
        old = ([o[len(final) + 1:] for o in self.fs.find(final)] if self.fs.exists(final) else [])
        marker = f"{final}/{COMMIT_MARKER}"
        if COMMIT_MARKER in old:
            self.fs.rm_file(marker)
        for rel in sorted(set(old) & tables):
            self.fs.rm_file(f"{final}/{rel}")
        order = sorted(zip(rels, files), key=lambda rp: (rp[0] in tables, rp[0]))  # media, then tables
        for rel, p in order:
            self.fs.put_file(str(p), f"{final}/{rel}")
        self.fs.pipe_file(marker, json.dumps({"files": rels, "committed_at": time.time(),
                                              "commit": staging.name}, sort_keys=True).encode())
        keep = set(rels) | {COMMIT_MARKER}
        for rel in old:
            if rel not in keep:
                self.fs.rm_file(f"{final}/{rel}")

    def committed(self, asset: str, pk: str) -> bool:
        """Whether a complete commit of this asset partition is in place (a folder locally; the
        commit marker on object stores, where a folder exists as soon as one file does)."""
        final = self.artifact_dir(asset, pk)
        if self.is_local:
            return os.path.isdir(final)
        return self.fs.exists(f"{final}/{COMMIT_MARKER}")

    def delete_partition(self, asset: str, pk: str) -> None:
        final = self.artifact_dir(asset, pk)
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)

    def partitions(self, asset: str) -> list[str]:
        base = self.join("artifacts", asset)
        if not self.fs.exists(base):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))

    # -- registry, lineage, quality -------------------------------------------------------------
    def registry_path(self, pk: str) -> str:
        return self.join("registry", f"{check_key(pk)}.json")

    def register_video(self, pk: str, record: dict) -> bool:
        """Record where a partition's video is. Returns False if it was already registered."""
        path = self.registry_path(pk)
        if self.fs.exists(path):
            return False
        self.write_json(path, record)
        return True

    def update_video(self, pk: str, **fields) -> bool:
        """Change fields of a registered video's record (e.g. its camera hints on a rerun with new
        ones). Returns whether anything changed."""
        rec = self.video_record(pk)
        changed = {k: v for k, v in fields.items() if rec.get(k) != v}
        if changed:
            rec.update(changed)
            self.write_json(self.registry_path(pk), rec)
        return bool(changed)

    def identities(self) -> dict:
        """The cache of files already hashed: uri -> {"stamp": "size:mtime", "sha256"} (a rerun of
        ``ego-assets run`` on the same folder does not read every video again)."""
        path = self.join("cache", "identities.json")
        try:
            return self.read_json(path) if self.fs.exists(path) else {}
        except (ValueError, OSError):
            return {}  # a damaged cache only costs the hashing again

    def save_identities(self, identities: dict) -> None:
        self.write_json(self.join("cache", "identities.json"), identities)

    def check_writable(self) -> None:
        """Raise a one-line :class:`StorageError` naming the home when it cannot be written (a
        read-only mount, a full disk, no permission), before any step starts."""
        if not self.is_local:
            return
        try:
            os.makedirs(self.root, exist_ok=True)
            probe = os.path.join(self.root, f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            with open(probe, "wb") as f:
                f.write(b"x")
            os.remove(probe)
        except OSError as e:
            raise StorageError(f"{self.root}: the storage home is not writable ({e.strerror or e})") from None

    def video_record(self, pk: str) -> dict:
        path = self.registry_path(pk)
        if not self.fs.exists(path):
            raise FileNotFoundError(f"partition {pk!r} is not registered (no {path}); run discovery first")
        return self.read_json(path)

    def video_uri(self, pk: str, default: str = "?") -> str:
        """The registered URI of a video for messages, or ``default`` when its record cannot be read."""
        try:
            return self.video_record(pk).get("uri", default)
        except Exception:  # noqa: BLE001 - a message must not fail on a broken registry entry
            return default

    def registered(self) -> list[str]:
        base = self.join("registry")
        if not self.fs.exists(base):
            return []
        return sorted(p.rsplit("/", 1)[-1][:-5] for p in self.fs.ls(base, detail=False) if p.endswith(".json"))

    def write_lineage(self, row: dict) -> None:
        pk = check_key(row["partition_key"])
        path = self.join("lineage", row["asset"], pk,
                         f"{lineage_stamp(time.time())}-{row.get('run_id') or 'norun'}.parquet")
        self.write_parquet(path, schemas.conform("lineage", {k: [v] for k, v in row.items()
                                                             if k != "partition_key"}, pk))

    def lineage(self, asset: str, pk: str) -> list[dict]:
        base = self.join("lineage", asset, check_key(pk))
        if not self.fs.exists(base):
            return []
        rows = []
        for p in sorted(self.fs.ls(base, detail=False)):
            rows.extend(self.read_parquet(p).to_pylist())
        return rows

    def write_quality(self, asset: str, pk: str, rows: list[dict]) -> None:
        for row in rows:
            self.write_parquet(
                self.join("quality", asset, check_key(pk), f"{row['check_name']}.parquet"),
                schemas.conform("quality", {k: [v] for k, v in row.items()}, pk))
