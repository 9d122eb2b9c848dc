"""Scale benchmark (issue 19): what adding (replacing, removing) one video costs on an object store with N
videos already there.

    python benchmarks/scale.py --partitions 100,1000,10000 --csv
    python benchmarks/scale.py --partitions 100,1000 --csv --op remove   # or --op replace

A local moto S3 server stands in for the bucket. For each N it writes, directly into the bucket (no video
processing), what N staged videos leave behind:

- a published LeRobot v3.0 dataset of N partitions: its metadata at full size (``meta/episodes`` with
  ``--episodes`` rows per video carrying real per-episode stats, ``info.json``, ``stats.json``,
  ``tasks.parquet``, the whole state with N entries, the state header), and one data and one video file
  per partition. Those N data/video files are small placeholders: the append must not read them, and if it
  did, ``bytes_read`` would show it;
- N registered video files under a source folder (discovery's listing) and N ``episodes`` table files
  (the catalog's view);

then adds one real staged partition (made by the writer from the synthetic partition of the tests) with
``incremental.append_partition``, as ``lerobot_dataset`` does on an object store, and prints per N:

    partitions,assemble_s,bytes_read,bytes_written,discover_s,catalog_query_s

``bytes_read``/``bytes_written``: bytes moved by the append through the filesystem (counted in the s3fs
calls that move data: cat_file, get_file, ranged reads of open files, pipe_file, put_file), not estimated.
``discover_s``: one discovery call over the N seen files plus one new file (``sources.discover``: lists
the source with its entries (size, ETag), compares each with what was seen, hashes the new one).
``catalog_query_s``: ``catalog.query`` of ``select count(*) from episodes`` over N + 1 partitions (a fresh
sandboxed connection), the N earlier ones folded into the catalog's segments by an earlier refresh
(``catalog_segments.compact``, run once before timing, as the refresh after each earlier run leaves
them) and the new video's file read on its own: it lists the table's files and reads the manifest, the
segments and the new file.
What is not in assemble_s: the ``lerobot_dataset`` asset's own bookkeeping (it reads each video's last
lineage row and staged manifest to find the new ones: O(N) small reads; see k8s/README.md).

``--op replace`` / ``--op remove`` (default ``add``): the same columns for replacing (a re-staged version of
it, ``incremental.replace_partition``) or removing (``incremental.remove_partition``) the video in the
middle slot (N // 2: a removal rewrites the data files after the slot, so the middle is the mean cost of a
uniformly chosen video; slot 0 costs twice that, the last slot nothing). For these the N data files are
real (the template partition's rows, renumbered per video: they are read and written again), the
full assembly's provenance file is there (``--episodes`` rows per video) and every episode's stats in
``meta/episodes`` are its own (``distinct_stats``: replicated rows would compress to a fraction of a real
file's size, and a removal reads and rewrites those files); the videos stay placeholders
(never read or written: ``bytes_*`` would show it). The removal reads all of ``meta/episodes`` (the stats
are aggregated again from every episode's), the state and the provenance file, and the data files after
the slot: O(N). Listings (LIST requests) and deletes move no bytes and are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUCKET = "ego-scale"


class Counter:
    """Bytes moved through an fsspec filesystem by the calls that move data (thread-safe: a removal
    renumbers several data files at once)."""

    def __init__(self, fs):
        import threading

        self.fs, self.read, self.written, self._lock = fs, 0, 0, threading.Lock()

    def _add(self, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.read += read
            self.written += written

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def cat_file(self, path, *a, **kw):
        out = self.fs.cat_file(path, *a, **kw)
        self._add(read=len(out))
        return out

    def get_file(self, rpath, lpath, **kw):
        out = self.fs.get_file(rpath, lpath, **kw)
        self._add(read=os.path.getsize(lpath))
        return out

    def open(self, path, mode="rb", **kw):
        f = self.fs.open(path, mode, **kw)
        if "r" in mode:
            fetch = f._fetch_range

            def counted(start, end, _fetch=fetch):
                data = _fetch(start, end)
                self._add(read=len(data))
                return data

            f._fetch_range = counted
            f.cache.fetcher = counted
        return f

    def pipe_file(self, path, data, **kw):
        self._add(written=len(data))
        return self.fs.pipe_file(path, data, **kw)

    def put_file(self, lpath, rpath, **kw):
        self._add(written=os.path.getsize(lpath))
        return self.fs.put_file(lpath, rpath, **kw)


def start_moto() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(k, None)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def seed(fs, files: dict[str, bytes]) -> None:
    """Setup only (never timed): put objects straight into the in-process moto backend, not through
    HTTP (40,000 PUTs through the local server take an hour on a loaded machine). What is measured
    afterwards goes through s3fs and the server as usual."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for path, data in files.items():
        bucket, key = path.split("/", 1)
        backend.put_object(bucket, key, data)
    fs.invalidate_cache()


def template(work: Path):
    """A real dataset of one synthetic partition (the metadata to replicate) and a second staged one (the
    video that is added)."""
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets_tests.lib.lerobot.synth import make_partition, stage

    staged = {}
    for name, seed in (("tmpl", 1), ("new", 2)):
        p = make_partition(work / "src", f"{name}-video", seed=seed, n_frames=300, w=320, h=240, textured=True)
        staged[name] = stage(p, work / "staged" / p.key)
    ds = work / "tmpl_ds"
    assemble(ds, [staged["tmpl"]], val_fraction=0.0)
    return ds, staged["new"]


def build(fs, root: str, tmpl: Path, n: int, episodes: int, real_data: bool = False) -> None:
    """The metadata of an N-partition dataset in the bucket, and N placeholder data/video files (with
    ``real_data``: the data files and the provenance file real, as a removal reads them)."""
    from ego_assets.lib.lerobot.layout import EPISODES_PER_META_FILE, HEADER_PATH, STATE_PATH
    from ego_assets.lib.lerobot.features import VIDEO_KEY
    from ego_assets.lib.lerobot.format import DEFAULT_DATA_PATH, DEFAULT_EPISODES_PATH, DEFAULT_VIDEO_PATH

    meta = pa.concat_tables([pq.read_table(f) for f in sorted((tmpl / "meta/episodes").glob("*/*.parquet"))])
    info = json.loads((tmpl / "meta/info.json").read_text())
    state = json.loads((tmpl / STATE_PATH).read_text())
    chunks = state["chunks_size"]
    total = n * episodes
    t = meta.take(pa.array(np.arange(total) % meta.num_rows))
    lengths = np.asarray(t["length"].to_numpy(), np.int64)
    to = np.cumsum(lengths)
    part = np.arange(total) // episodes
    ch, fi = np.divmod(part, chunks)
    mf = np.arange(total) // EPISODES_PER_META_FILE
    mch, mfi = np.divmod(mf, chunks)
    keys = pa.array([f"p{i:06d}" for i in part])
    cols = {"episode_index": pa.array(np.arange(total)), "dataset_from_index": pa.array(to - lengths),
            "dataset_to_index": pa.array(to), "data/chunk_index": pa.array(ch), "data/file_index": pa.array(fi),
            f"videos/{VIDEO_KEY}/chunk_index": pa.array(ch), f"videos/{VIDEO_KEY}/file_index": pa.array(fi),
            "meta/episodes/chunk_index": pa.array(mch), "meta/episodes/file_index": pa.array(mfi),
            "source/partition_key": keys}
    for c, v in cols.items():
        i = t.schema.get_field_index(c)
        t = t.set_column(i, t.schema.field(i), v.cast(t.schema.field(i).type))
    files = {}
    if real_data:
        t = distinct_stats(t)
        files.update(real_data_files(root, tmpl, t, lengths, episodes, n))
    for s in range(0, total, EPISODES_PER_META_FILE):
        c, f = divmod(s // EPISODES_PER_META_FILE, chunks)
        sink = pa.BufferOutputStream()
        pq.write_table(t.slice(s, EPISODES_PER_META_FILE), sink, compression="snappy")
        files[f"{root}/{DEFAULT_EPISODES_PATH.format(chunk_index=c, file_index=f)}"] = sink.getvalue().to_pybytes()
    info.update(total_episodes=total, total_frames=int(to[-1]), splits={"train": f"0:{total}"})
    files[f"{root}/meta/info.json"] = json.dumps(info, indent=4).encode()
    for rel in ("meta/stats.json", "meta/tasks.parquet"):
        files[f"{root}/{rel}"] = (tmpl / rel).read_bytes()
    entry = next(iter(state["partitions"].values()))
    state["partitions"] = {}
    for i in range(n):
        c, f = divmod(i, chunks)
        d, v = DEFAULT_DATA_PATH.format(chunk_index=c, file_index=f), DEFAULT_VIDEO_PATH.format(
            video_key=VIDEO_KEY, chunk_index=c, file_index=f)
        state["partitions"][f"p{i:06d}"] = {**entry, "data_file": d, "video_file": v, "n_episodes": episodes}
        if not real_data:
            files[f"{root}/{d}"] = b"placeholder data file: an append must not read it"
        files[f"{root}/{v}"] = b"placeholder video file: an append must not read it"
    files[f"{root}/{STATE_PATH}"] = json.dumps(state, indent=1).encode()
    header = {k: v for k, v in state.items() if k != "partitions"} | {"n_partitions": n}
    files[f"{root}/{HEADER_PATH}"] = json.dumps(header, indent=1).encode()
    seed(fs, files)


def distinct_stats(t: pa.Table) -> pa.Table:
    """Every episode's float stats made its own (x (1 + 0.001 N(0, 1)), fixed seed): replicated rows would
    compress in Parquet to a fraction of what a real ``meta/episodes`` holds (~19 kB per episode with
    this action space, against ~0.3 kB replicated), and a removal reads and rewrites those files."""
    rng = np.random.default_rng(0)
    for name in t.column_names:
        typ = t.schema.field(name).type
        if not (name.startswith("stats/") and pa.types.is_list(typ) and pa.types.is_floating(typ.value_type)):
            continue
        col = t[name].combine_chunks()
        vals = col.flatten().to_numpy(zero_copy_only=False)
        noisy = pa.array(vals * (1 + 1e-3 * rng.standard_normal(len(vals))), typ.value_type)
        t = t.set_column(t.schema.get_field_index(name), name, pa.ListArray.from_arrays(col.offsets, noisy))
    return t


def real_data_files(root: str, tmpl: Path, meta: pa.Table, lengths: np.ndarray, episodes: int, n: int) -> dict:
    """Per video its data file (the template's episodes' rows, ``index``/``episode_index`` numbered as
    ``meta`` says) and the full assembly's provenance file: what a removal reads and renumbers."""
    from ego_assets.lib.lerobot.format import DEFAULT_DATA_PATH
    from ego_assets.lib.lerobot.layout import PARQUET_KEY, PROVENANCE_PATH

    data = pa.concat_tables([pq.read_table(f) for f in sorted((tmpl / "data").glob("*/*.parquet"))])
    tm = pa.concat_tables([pq.read_table(f) for f in sorted((tmpl / "meta/episodes").glob("*/*.parquet"))])
    spans = [data.slice(a, b - a) for a, b in zip(tm["dataset_from_index"].to_pylist(),
                                                    tm["dataset_to_index"].to_pylist())]
    chunks = json.loads((tmpl / "meta/info.json").read_text())["chunks_size"]
    start = np.concatenate([[0], np.cumsum(lengths)])
    files = {}
    md = dict(data.schema.metadata or {})
    for i in range(n):
        eps = range(i * episodes, (i + 1) * episodes)
        t = pa.concat_tables([spans[e % len(spans)] for e in eps])
        ep = np.repeat(np.asarray(list(eps), np.int64), lengths[i * episodes:(i + 1) * episodes])
        idx = np.arange(start[i * episodes], start[(i + 1) * episodes], dtype=np.int64)
        t = t.set_column(t.schema.get_field_index("episode_index"), "episode_index", pa.array(ep))
        t = t.set_column(t.schema.get_field_index("index"), "index", pa.array(idx))
        t = t.replace_schema_metadata({**md, PARQUET_KEY: f"p{i:06d}".encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(t, sink, compression="snappy")
        c, f = divmod(i, chunks)
        files[f"{root}/{DEFAULT_DATA_PATH.format(chunk_index=c, file_index=f)}"] = sink.getvalue().to_pybytes()
    prov = pq.read_table(tmpl / PROVENANCE_PATH)
    total = n * episodes
    prov = prov.take(pa.array(np.arange(total) % prov.num_rows))
    prov = prov.set_column(prov.schema.get_field_index("episode_index"), "episode_index",
                           pa.array(np.arange(total), prov.schema.field("episode_index").type))
    prov = prov.set_column(prov.schema.get_field_index("partition_key"), "partition_key",
                           meta["source/partition_key"].cast(prov.schema.field("partition_key").type))
    sink = pa.BufferOutputStream()
    pq.write_table(prov, sink, compression="zstd")
    files[f"{root}/{PROVENANCE_PATH}"] = sink.getvalue().to_pybytes()
    return files


def restaged(work: Path, new_staged, key: str) -> Path:
    """The added video's staged folder under another partition key: a re-staged version of ``key``."""
    import shutil

    from ego_assets.lib.lerobot.layout import STAGED_MANIFEST

    dst = work / "restaged" / key
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(new_staged.path, dst)
    m = json.loads((dst / STAGED_MANIFEST).read_text())
    m.update(partition_key=key, version=f"restaged-{m['version']}")
    (dst / STAGED_MANIFEST).write_text(json.dumps(m))
    return dst


def build_sources_and_tables(fs, home: str, n: int, tmpl_prov: pa.Table) -> dict:
    """N tiny video files under a source folder, and N `episodes` table files. Returns discovery's `seen`."""
    from ego_assets.lib import schemas
    from ego_assets.lib.storage import Store

    files = {f"{home}/src/v{i:06d}.mp4": f"video {i}".encode() for i in range(n)}
    store = Store(f"s3://{home}")
    rows = tmpl_prov.drop_columns(["partition_key"])
    for i in range(n):
        pk = f"p{i:06d}"
        sink = pa.BufferOutputStream()
        pq.write_table(schemas.conform("episodes", rows, pk), sink)
        files[store.table_path("episodes", pk)] = sink.getvalue().to_pybytes()
    seed(fs, files)
    # the steady state: the catalog refresh after each earlier run folded those files into segments
    from ego_assets.lib import catalog_segments

    t0 = time.perf_counter()
    catalog_segments.compact(store, "episodes")
    print(f"# n={n}: first compaction of {n} episodes files: {time.perf_counter() - t0:.1f} s (once)",
          file=sys.stderr)
    # the new video's table, written since the last refresh
    sink = pa.BufferOutputStream()
    pq.write_table(schemas.conform("episodes", rows, "new-video"), sink)
    fs.pipe_file(store.table_path("episodes", "new-video"), sink.getvalue().to_pybytes())
    seen = {}
    for p, info in fs.find(f"{home}/src", detail=True).items():
        from ego_assets.lib.sources import file_stamp, hints_digest

        seen[f"s3://{p}"] = f"cam:{file_stamp(info)}|{hints_digest({})}"
    return seen


def run(n: int, episodes: int, work: Path, tmpl: Path, new_staged, op: str = "add") -> dict:
    import fsspec

    from ego_assets.lib import catalog
    from ego_assets.lib.lerobot import incremental
    from ego_assets.lib.sources import Source, discover
    from ego_assets.lib.storage import Store

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    home = f"{BUCKET}/n{n}"
    root = f"{home}/datasets/ego_assets"
    build(fs, root, tmpl, n, episodes, real_data=op != "add")
    sdir = f"{home}/artifacts/lerobot_episodes/new-video/staged"
    victim = f"p{n // 2:06d}"  # --op replace/remove: the video in the middle slot
    fs.put(str(restaged(work, new_staged, victim) if op == "replace" else new_staged.path) + "/", sdir + "/",
           recursive=True)
    prov = pq.read_table(tmpl / "meta/ego_assets_provenance.parquet")
    seen = build_sources_and_tables(fs, home, n, prov)
    fs.pipe_file(f"{home}/src/new.mp4", b"a new video")

    c = Counter(fsspec.filesystem("s3", skip_instance_cache=True))
    t0 = time.perf_counter()
    if op == "add":
        res = incremental.append_partition(c, root, sdir, work / f"scratch{n}")
    elif op == "replace":
        res = incremental.replace_partition(c, root, sdir, work / f"scratch{n}")
    else:
        res = incremental.remove_partition(c, root, victim)
    assemble_s = time.perf_counter() - t0
    if op == "add":
        assert res.added == [new_staged.partition_key] and res.n_episodes == n * episodes + new_staged.n_episodes
    elif op == "replace":
        assert res.replaced == [victim] and res.n_episodes == (n - 1) * episodes + new_staged.n_episodes
        assert len(res.data_written) == n - n // 2  # the later videos' data files, and its own
    else:
        assert res.removed == [victim] and res.n_episodes == (n - 1) * episodes
        assert len(res.data_written) == n - n // 2 - 1

    t0 = time.perf_counter()
    new, _, errors = discover([Source("cam", f"s3://{home}/src")], seen, set(), limit=10)
    discover_s = time.perf_counter() - t0
    assert not errors and len(new) == 1, (new, errors)

    os.environ["EGO_ASSETS_CATALOG_DIR"] = str(work / "catalog")
    store = Store(f"s3://{home}")
    t0 = time.perf_counter()
    _, rows = catalog.query(store, "select count(*) from episodes")
    catalog_query_s = time.perf_counter() - t0
    assert rows[0][0] == (n + 1) * prov.num_rows, rows
    return dict(partitions=n, assemble_s=round(assemble_s, 3), bytes_read=c.read, bytes_written=c.written,
                discover_s=round(discover_s, 3), catalog_query_s=round(catalog_query_s, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--partitions", default="100,1000,10000")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per video in the existing dataset")
    ap.add_argument("--csv", action="store_true", help="CSV only (no notes)")
    ap.add_argument("--op", choices=("add", "replace", "remove"), default="add",
                    help="the change measured: add a video, replace or remove the one in the middle slot")
    a = ap.parse_args()
    start_moto()
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
    cols = ["partitions", "assemble_s", "bytes_read", "bytes_written", "discover_s", "catalog_query_s"]
    with tempfile.TemporaryDirectory(prefix="ego_scale_") as tmp:
        work = Path(tmp)
        tmpl, new_staged = template(work)
        if not a.csv:
            size = sum(f.stat().st_size for f in Path(new_staged.path).iterdir())
            print(f"# added video: {new_staged.n_episodes} episodes, {new_staged.n_frames} frames, staged "
                  f"{size} bytes; existing videos: {a.episodes} episodes each", file=sys.stderr)
        print(",".join(cols), flush=True)
        for n in (int(x) for x in a.partitions.split(",")):
            r = run(n, a.episodes, work, tmpl, new_staged, a.op)
            print(",".join(str(r[c]) for c in cols), flush=True)
            # the next N starts from an empty bucket (setup only, straight into the backend: the
            # server deletes one key at a time)
            from moto.core import DEFAULT_ACCOUNT_ID
            from moto.s3.models import s3_backends

            s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[BUCKET].keys.clear()


if __name__ == "__main__":
    main()
