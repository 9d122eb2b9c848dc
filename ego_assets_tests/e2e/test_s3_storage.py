"""The storage layer on an S3-compatible object store (docs/architecture.md §5, issue 7): a moto server the test
starts on 127.0.0.1, reached the way pods reach a real store (EGO_ASSETS_HOME=s3://bucket/prefix, the
endpoint in AWS_ENDPOINT_URL, keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY).

Commits, replacement, an interrupted commit, what readers see at each PUT, fresh listings across
writers, the DuckDB catalog over s3://, the LeRobot dataset assembled there, and `ego-assets run` /
`check` with their storage in the bucket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from ego_assets.lib import catalog, schemas
from ego_assets.lib.storage import COMMIT_MARKER, Store

BUCKET = "ego-test"
REAL_CLIP = Path(__file__).resolve().parents[2] / "sample_data" / "egoloc_pour_water_rgb.mp4"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, and the standard AWS variables pointing at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "EGO_ASSETS_CATALOG_DIR": str(tmp_path_factory.mktemp("catalog"))}
    mp = pytest.MonkeyPatch()
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(k, raising=False)
    for k, v in env.items():
        mp.setenv(k, v)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(BUCKET)
    try:
        yield env
    finally:
        mp.undo()
        server.stop()


def _frames(pk: str, n: int):
    return schemas.conform("frames", {"frame_index": list(range(n)), "t_s": [i / 10 for i in range(n)],
                                      "is_keyframe": [i == 0 for i in range(n)]}, pk)


def _other_writer():
    """A second client with its own connection and no shared cache: another pod."""
    return fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)


class Recorder:
    """Wraps the store's filesystem and records the order of PUTs and deletes."""

    def __init__(self, fs, fail_on: str | None = None):
        self.fs, self.ops, self.fail_on = fs, [], fail_on

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def put_file(self, lpath, rpath, **kw):
        if self.fail_on and rpath.endswith(self.fail_on):
            raise ConnectionError(f"killed while uploading {rpath}")
        self.ops.append(("put", rpath.rsplit("/", 1)[-1]))
        return self.fs.put_file(lpath, rpath, **kw)

    def pipe_file(self, path, data, **kw):
        self.ops.append(("put", path.rsplit("/", 1)[-1]))
        return self.fs.pipe_file(path, data, **kw)

    def rm_file(self, path):
        self.ops.append(("rm", path.rsplit("/", 1)[-1]))
        return self.fs.rm_file(path)

    def rm(self, paths, **kw):
        self.ops.extend(("rm", p.rsplit("/", 1)[-1]) for p in ([paths] if isinstance(paths, str) else paths))
        return self.fs.rm(paths, **kw)


def test_home_url_commit_read_and_replace(s3):
    store = Store(f"s3://{BUCKET}/home1")
    assert not store.is_local and store.protocol == "s3" and store.root == f"{BUCKET}/home1"
    assert not store.committed("frames", "v1")
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames("v1", 5))
        Path(w.path("proxy.mp4")).write_bytes(b"old proxy")
        Path(w.path("extra/old.bin")).write_bytes(b"x")
    # visible to another client (another pod): the table, the media, the marker and its manifest
    other = _other_writer()
    final = store.artifact_dir("frames", "v1")
    assert sorted(other.ls(final, detail=False)) == sorted(
        f"{final}/{n}" for n in (COMMIT_MARKER, "extra", "frames.parquet", "proxy.mp4"))
    manifest = json.loads(other.cat_file(f"{final}/{COMMIT_MARKER}"))
    assert sorted(manifest["files"]) == ["extra/old.bin", "frames.parquet", "proxy.mp4"]
    assert store.committed("frames", "v1") and store.has_table("frames", "v1")
    assert store.read_table("frames", "v1").num_rows == 5
    local = store.local_path("frames", "v1", "proxy.mp4")
    assert Path(local).read_bytes() == b"old proxy"
    # replacement: new content, files of the old commit that the new one lacks are gone
    rec = Recorder(store.fs)
    store.fs = rec
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames("v1", 7))
        Path(w.path("proxy.mp4")).write_bytes(b"new proxy")
    store.fs = rec.fs
    assert store.read_table("frames", "v1").num_rows == 7
    assert sorted(p.rsplit("/", 1)[-1] for p in other.find(final)) == [COMMIT_MARKER, "frames.parquet",
                                                                        "proxy.mp4"]
    # the cached download follows the new commit (keyed by ETag), it does not serve the old bytes
    assert Path(store.local_path("frames", "v1", "proxy.mp4")).read_bytes() == b"new proxy"
    # order: hide the old commit (marker, tables), media, tables, marker, then stale files
    assert rec.ops == [("rm", COMMIT_MARKER), ("rm", "frames.parquet"), ("put", "proxy.mp4"),
                       ("put", "frames.parquet"), ("put", COMMIT_MARKER), ("rm", "old.bin")]
    assert store.partitions("frames") == ["v1"]


def test_what_readers_see_during_a_commit(s3):
    """At every PUT of a replacement, a reader sees either the old partition whole, or no table at all,
    or the new table with the new media: never the new table without its media, nor old and new
    tables together."""
    store = Store(f"s3://{BUCKET}/home2")
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames("v1", 3))
        Path(w.path("proxy.mp4")).write_bytes(b"A")
    reader = Store(f"s3://{BUCKET}/home2")
    reader.fs = _other_writer()
    seen = []

    class Spy(Recorder):
        def _look(self):
            has = reader.has_table("frames", "v1")
            rows = reader.read_table("frames", "v1").num_rows if has else None
            media = (reader.fs.cat_file(reader.artifact("frames", "v1", "proxy.mp4"))
                     if reader.fs.exists(reader.artifact("frames", "v1", "proxy.mp4")) else None)
            seen.append((rows, media, reader.committed("frames", "v1")))

        def put_file(self, lpath, rpath, **kw):
            self._look()
            out = super().put_file(lpath, rpath, **kw)
            self._look()
            return out

    store.fs = Spy(store.fs)
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames("v1", 8))
        Path(w.path("proxy.mp4")).write_bytes(b"B")
    for rows, media, committed in seen:
        assert rows in (None, 8), seen        # the old table is hidden before anything new lands
        if rows == 8:
            assert media == b"B", seen        # a visible new table always has its new media
        if committed:
            assert rows == 8 and media == b"B"
    assert (None, b"B", False) in seen and seen[-1][0] == 8


def test_interrupted_commit_leaves_nothing_a_rerun_trips_over(s3):
    store = Store(f"s3://{BUCKET}/home3")
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames("v1", 4))
        Path(w.path("proxy.mp4")).write_bytes(b"A")
    store.fs = Recorder(store.fs, fail_on="frames.parquet")  # the connection dies at the table PUT
    with pytest.raises(ConnectionError):
        with store.write_partition("frames", "v1") as w:
            w.write_table("frames", _frames("v1", 9))
            Path(w.path("proxy.mp4")).write_bytes(b"B")
            Path(w.path("extra.bin")).write_bytes(b"E")
    store.fs = store.fs.fs
    # not committed, no table: readers and the runner see a partition to (re)compute, not a mix
    assert not store.committed("frames", "v1") and not store.has_table("frames", "v1")
    with pytest.raises(FileNotFoundError, match="not materialized"):
        store.read_table("frames", "v1")
    # the local staging folder is gone (pods share nothing but the bucket)
    assert not list(store._scratch().glob("frames/v1.*"))  # noqa: SLF001
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames("v1", 6))
        Path(w.path("proxy.mp4")).write_bytes(b"C")
    assert store.committed("frames", "v1") and store.read_table("frames", "v1").num_rows == 6
    names = sorted(p.rsplit("/", 1)[-1] for p in store.fs.find(store.artifact_dir("frames", "v1")))
    assert names == [COMMIT_MARKER, "frames.parquet", "proxy.mp4"]  # the half-commit's extra.bin too


def test_listings_are_fresh_across_writers(s3):
    """A long-lived process (the code server running the sensor) sees what other pods wrote since its
    last look: no cached listing hides new registrations, partitions or lineage rows."""
    store = Store(f"s3://{BUCKET}/home4")
    assert store.registered() == [] and store.partitions("frames") == []
    other = Store(f"s3://{BUCKET}/home4")
    other.fs = _other_writer()
    other.register_video("cam-a1", {"uri": "s3://x/a.mp4", "source": "cam"})
    with other.write_partition("frames", "cam-a1") as w:
        w.write_table("frames", _frames("cam-a1", 2))
    other.write_lineage(dict(partition_key="cam-a1", asset="frames", run_id="r1", code_version="1",
                             data_version="d", upstream="{}", params="{}", status="ok", error=None))
    assert store.registered() == ["cam-a1"]
    assert store.partitions("frames") == ["cam-a1"] and store.committed("frames", "cam-a1")
    assert [r["run_id"] for r in store.lineage("frames", "cam-a1")] == ["r1"]
    assert not store.register_video("cam-a1", {"uri": "again"})  # registered once
    # a second round: the folders this process has listed before change under it
    other.register_video("cam-b2", {"uri": "s3://x/b.mp4", "source": "cam"})
    with other.write_partition("frames", "cam-b2") as w:
        w.write_table("frames", _frames("cam-b2", 3))
    other.write_lineage(dict(partition_key="cam-a1", asset="frames", run_id="r2", code_version="1",
                             data_version="e", upstream="{}", params="{}", status="ok", error=None))
    assert store.registered() == ["cam-a1", "cam-b2"]
    assert store.partitions("frames") == ["cam-a1", "cam-b2"] and store.committed("frames", "cam-b2")
    assert [r["run_id"] for r in store.lineage("frames", "cam-a1")] == ["r1", "r2"]


def test_catalog_over_s3(s3):
    store = Store(f"s3://{BUCKET}/home5")
    assert catalog.query(store, "select count(*) from frames")[1] == [(0,)]
    for pk, n in (("a", 3), ("b", 4)):
        with store.write_partition("frames", pk) as w:
            w.write_table("frames", _frames(pk, n))
        catalog.ensure_view(store, "frames")
    store.write_lineage(dict(partition_key="a", asset="frames", run_id="r1", code_version="1",
                             data_version="d", upstream="{}", params="{}", status="ok", error=None))
    store.write_quality("frames", "a", [dict(asset="frames", check_name="c1", passed=True,
                                             severity="ERROR", value=1.0, detail="fine")])
    refreshed = catalog.refresh(store)  # every table at once: one filesystem registration per connection
    assert refreshed["frames"] and refreshed["lineage"] and not refreshed["hand_tracks"]
    cols, rows = catalog.query(store, "select partition_key, count(*) as n, max(t_s) from frames "
                                      "group by 1 order by 1")
    assert rows == [("a", 3, pytest.approx(0.2)), ("b", 4, pytest.approx(0.3))]
    # a partition written after the views were defined is seen without touching the catalog
    with store.write_partition("frames", "c") as w:
        w.write_table("frames", _frames("c", 5))
    assert catalog.query(store, "select count(*) from frames")[1] == [(12,)]
    con = catalog.connect(store, in_memory=True)
    try:
        assert con.execute("select count(*) from frames").fetchone() == (12,)
        assert con.execute("select run_id from lineage").fetchall() == [("r1",)]
        assert con.execute("select check_name, passed from quality").fetchall() == [("c1", True)]
        assert con.execute("select count(*) from hand_tracks").fetchone() == (0,)
    finally:
        con.close()
    # the catalog file is local (DuckDB files need a filesystem), the views point at s3://
    path = catalog.catalog_path(store)
    assert path.startswith(os.environ["EGO_ASSETS_CATALOG_DIR"])
    # the refresh folded a and b into a segment in the bucket; the file's views read it and glob c
    from ego_assets.lib import catalog_segments

    assert sorted(catalog_segments.held(store, "frames")) == [
        "artifacts/frames/a/frames.parquet", "artifacts/frames/b/frames.parquet"]
    assert catalog_segments.snapshot(store, "frames").fresh == ["artifacts/frames/c/frames.parquet"]
    con = catalog.connect(store)
    try:
        assert con.execute("select partition_key, count(*) from frames group by 1 order by 1").fetchall() == [
            ("a", 3), ("b", 4), ("c", 5)]
    finally:
        con.close()


@pytest.mark.slow
def test_cli_run_with_home_in_the_bucket(s3, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    # the real clip (hands in view), so that the dataset step has episodes to assemble in the bucket
    shutil.copyfile(REAL_CLIP, videos / "clip one.mp4")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    home = f"s3://{BUCKET}/cli"
    env = dict(os.environ, EGO_ASSETS_HOME=home, DAGSTER_HOME=str(dagster_home),
               DAGSTER_DISABLE_TELEMETRY="1", TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    ego = str(Path(sys.executable).parent / "ego-assets")
    r = subprocess.run([ego, "run", str(videos), "--source", "bucket"], env=env, capture_output=True,
                       text=True, timeout=600)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("ok", "FAILED"))]
    # every asset succeeded on the bucket, the dataset step included
    video_lines = [ln for ln in lines if "clip one.mp4" in ln]
    assert len(video_lines) == 1 and video_lines[0].startswith("ok"), r.stdout + r.stderr
    assert not [ln for ln in lines if ln.startswith("FAILED")], r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    # everything is in the bucket, nothing under a local home
    store = Store(home)
    (pk,) = store.registered()
    from ego_assets.definitions import defs
    from ego_assets.defs.execute import per_video_assets

    assets = per_video_assets(defs)
    assert {"source_videos", "clips", "frames"} <= set(assets)
    for asset in assets:
        assert store.lineage(asset, pk)[-1]["status"] == "ok", asset
        assert store.committed(asset, pk), asset
    with store.fs.open(store.table_path("frames", pk), "rb") as f:
        frames = pq.read_table(f)
    assert frames.num_rows == 100  # 9.9 s at 10 fps
    clip_uri = store.read_table("clips", pk).column("uri")[0].as_py()
    assert clip_uri.startswith(f"{home}/artifacts/clips/{pk}/")
    assert fsspec.filesystem("s3", skip_instance_cache=True).exists(clip_uri)
    r = subprocess.run([ego, "catalog", "select count(*) as n from episodes", "--format", "csv"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n_episodes = int(r.stdout.splitlines()[1])
    assert n_episodes > 0

    # the dataset is in the bucket, and loads with LeRobot once downloaded
    from ego_assets.lib.lerobot.validate import validate_dataset

    root = store.datasets_dir("ego_assets")
    videos_before = {p: store.fs.info(p)["ETag"] for p in store.fs.find(root) if p.endswith(".mp4")}
    assert videos_before
    with store.working_copy(root, readonly=True) as local:
        info = json.loads((Path(local) / "meta" / "info.json").read_text())
        assert info["total_episodes"] == n_episodes
        failed = [c for c in validate_dataset(local) if not c[1] and c[0] != "stats_nondegenerate"]
        assert not failed, failed
    # the quality gate reads it there too
    r = subprocess.run([ego, "check"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lerobot_dataset" in r.stdout + r.stderr
    # a rerun is resumable on the bucket: every step up to date, the dataset reassembled from its staged
    # partition without uploading its video again
    r = subprocess.run([ego, "run", str(videos), "--source", "bucket"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p: store.fs.info(p)["ETag"] for p in store.fs.find(root) if p.endswith(".mp4")} == videos_before


def test_lerobot_dataset_assembled_in_the_bucket(s3, tmp_path):
    """The LeRobot dataset on an object store (what `lerobot_dataset` does there): assembled in a working
    copy, published with its metadata last; the next assembly adds a video without uploading the
    existing ones again; a failed assembly uploads nothing; the published dataset loads with LeRobot."""
    from ego_assets.lib.lerobot.validate import validate_dataset
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets.lib.lerobot.staging import load_staged
    from ego_assets_tests.lib.lerobot.synth import make_partition, stage

    src = tmp_path / "src"
    staged = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        p = make_partition(src, f"vid-{name}", seed=seed)
        stage(p, tmp_path / "staged" / p.key)
        staged[name] = load_staged(tmp_path / "staged" / p.key)
    store = Store(f"s3://{BUCKET}/ds")
    root = store.datasets_dir("ego_assets")
    store.fs = rec = Recorder(store.fs)
    with store.working_copy(root, publish_last=("meta/",)) as local:
        first = assemble(local, [staged["a"], staged["b"]], val_fraction=0.0)
    meta_at = [i for i, (op, name) in enumerate(rec.ops) if name in ("info.json", "stats.json")]
    video_at = [i for i, (op, name) in enumerate(rec.ops) if name.endswith(".mp4")]
    assert video_at and max(video_at) < min(meta_at)  # readers never see metadata before its files
    videos_before = {p: store.fs.info(p)["ETag"] for p in store.fs.find(root) if p.endswith(".mp4")}
    assert len(videos_before) == 2

    rec.ops.clear()
    with store.working_copy(root, publish_last=("meta/",)) as local:
        second = assemble(local, [staged["c"]], val_fraction=0.0)
    assert second.added == ["vid-c"] and second.n_episodes == first.n_episodes + staged["c"].n_episodes
    # (every video in train here, ordered by key: vid-c takes the next file slot. A video that sorts
    # before others shifts their file numbers; those files are then uploaded again, never re-encoded.)
    put_videos = [name for op, name in rec.ops if op == "put" and name.endswith(".mp4")]
    assert put_videos == ["file-002.mp4"]  # only the new video's file
    assert {p: store.fs.info(p)["ETag"] for p in videos_before} == videos_before

    rec.ops.clear()
    with pytest.raises(RuntimeError, match="boom"):
        with store.working_copy(root, publish_last=("meta/",)) as local:
            assemble(local, [], remove=["vid-a"], val_fraction=0.0)
            raise RuntimeError("boom")
    assert rec.ops == []  # nothing published by a failed step

    download = tmp_path / "download"
    store.fs.get(root, str(download), recursive=True)
    if not (download / "meta").exists():  # fsspec puts the folder itself inside the target
        download = download / "ego_assets"
    checks = validate_dataset(download, second.episodes, repo_id="local/ego_assets")
    failed = [c for c in checks if not c[1] and c[0] != "stats_nondegenerate"]
    assert not failed, failed


def test_video_appended_in_the_bucket_reads_only_its_files_and_the_metadata(s3, tmp_path):
    """Issue 19: adding a video to a dataset in the bucket (incremental.append_partition, what
    `lerobot_dataset` does on an object store) reads the new video's staged files and the small metadata;
    no data or video file of the dataset is read or written; the result loads with LeRobot."""
    from ego_assets.lib.lerobot import incremental
    from ego_assets.lib.lerobot.validate import validate_dataset
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets.lib.lerobot.staging import load_staged
    from ego_assets_tests.lib.lerobot.synth import make_partition, stage

    src = tmp_path / "src"
    store = Store(f"s3://{BUCKET}/append")
    root = store.datasets_dir("ego_assets")
    staged = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        p = make_partition(src, f"vid-{name}", seed=seed)
        stage(p, tmp_path / "staged" / p.key)
        staged[name] = load_staged(tmp_path / "staged" / p.key)
    with store.working_copy(root, publish_last=("meta/",)) as local:
        first = assemble(local, [staged["a"], staged["b"]], val_fraction=0.0)
    sdir = store.join("staging", "vid-c")
    store.fs.put(str(staged["c"].path) + "/", sdir + "/", recursive=True)

    read: list[str] = []
    real = store.fs

    class Reads(Recorder):
        def get_file(self, rpath, lpath, **kw):
            read.append(rpath)
            return real.get_file(rpath, lpath, **kw)

        def cat_file(self, path, *a, **kw):
            read.append(path)
            return real.cat_file(path, *a, **kw)

        def open(self, path, *a, **kw):
            read.append(path)
            return real.open(path, *a, **kw)

    fs = Reads(real)
    res = incremental.append_partition(fs, root, sdir, tmp_path / "scratch", repo_id="local/ego_assets")
    assert res.n_episodes == first.n_episodes + staged["c"].n_episodes
    dataset_files_read = [p for p in read if p.startswith(root) and "/meta/" not in p]
    assert dataset_files_read == []
    # puts: the new data and video files (slot 2), then metadata only (meta/episodes' new file-001)
    assert fs.ops[:2] == [("put", "file-002.parquet"), ("put", "file-002.mp4")]
    assert sorted(n for _, n in fs.ops[2:]) == sorted(
        ["stats.json", "ego_assets_provenance.append-000002.parquet", "file-001.parquet", "info.json",
         "vid-c.json", "ego_assets_header.json"] + (["tasks.parquet"] if ("put", "tasks.parquet") in fs.ops else []))
    assert fs.ops[-3:] == [("put", "info.json"), ("put", "vid-c.json"), ("put", "ego_assets_header.json")]
    assert not [p for p in read if p.endswith("ego_assets_state.json")]  # grows with the dataset: not read
    download = tmp_path / "download"
    store.fs.get(root, str(download), recursive=True)
    if not (download / "meta").exists():
        download = download / "ego_assets"
    checks = validate_dataset(download, repo_id="local/ego_assets")
    failed = [c for c in checks if not c[1] and c[0] != "stats_nondegenerate"]
    assert not failed, failed


def test_dataset_shards_in_the_bucket(s3, tmp_path, monkeypatch):
    """Issue 19 item 4 on an object store: EGO_ASSETS_DATASET_SHARD=source gives one dataset per source in
    the bucket; a new video of one source is appended to its shard alone (no file of the other shard
    is written); every shard downloads and loads with LeRobot with exactly its videos' episodes."""
    import dagster as dg
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from ego_assets.defs import dataset
    from ego_assets.defs.settings import EgoStorage
    from ego_assets_tests.defs.test_dataset_shards import SIZE, _add

    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    home = f"s3://{BUCKET}/shards"
    monkeypatch.setenv("EGO_ASSETS_HOME", home)
    monkeypatch.setenv("EGO_ASSETS_DATASET_IMAGE_SIZE", "x".join(map(str, SIZE)))
    monkeypatch.setenv("EGO_ASSETS_DATASET_SHARD", "source")
    store = Store(home)
    n = {k: _add(store, tmp_path, k, k.split("-")[0], seed) for k, seed in
         (("lab-000", 1), ("lab-001", 2), ("web-000", 3))}

    def materialize() -> dict:
        r = dg.materialize([dataset.lerobot_dataset], resources={"ego": EgoStorage()})
        assert r.success
        return r.asset_materializations_for_node("lerobot_dataset")[0].metadata["per_shard"].value

    first = materialize()
    assert {s: first[s]["episodes"] for s in first} == {"lab": n["lab-000"] + n["lab-001"], "web": n["web-000"]}
    roots = dataset.dataset_roots(store)
    lab_files = {p: store.fs.info(p)["ETag"] for p in store.fs.find(roots["lab"])}
    n["web-001"] = _add(store, tmp_path, "web-001", "web", 4)
    second = materialize()
    assert second["web"]["appended"] and second["web"]["added"] == 1
    assert {p: store.fs.info(p)["ETag"] for p in store.fs.find(roots["lab"])} == lab_files  # untouched
    for shard, members in {"lab": ["lab-000", "lab-001"], "web": ["web-000", "web-001"]}.items():
        local = tmp_path / "download" / shard
        store.fs.get(roots[shard] + "/", str(local), recursive=True)
        ds = LeRobotDataset(f"local/ego_assets-{shard}", root=local, video_backend="pyav")
        assert ds.meta.total_episodes == sum(n[k] for k in members)
        assert set(ds.meta.episodes["source/partition_key"]) == set(members)


def _etags(fs, root: str, suffix: str) -> dict:
    return {p: fs.info(p)["ETag"] for p in fs.find(root) if p.endswith(suffix)}


def test_video_replaced_and_removed_in_the_bucket_touch_no_other_video(s3, tmp_path):
    """Issue 19: replacing and removing a video of a dataset in the bucket (incremental.replace_partition /
    remove_partition) upload no other video and read none (their objects keep their ETags); only the
    data files after the changed slot are written again; the result equals a full assembly of the same
    videos (by partition key) and loads with LeRobot, a query across episode boundaries included."""
    from ego_assets.lib.lerobot import incremental
    from ego_assets.lib.lerobot.assembly import assemble
    from ego_assets.lib.lerobot.staging import load_staged
    from ego_assets_tests.lib.lerobot.dataset_checks import assert_same_dataset, check_consistent, load_check
    from ego_assets_tests.lib.lerobot.synth import make_partition, stage

    src = tmp_path / "src"
    store = Store(f"s3://{BUCKET}/change")
    root = store.datasets_dir("ego_assets")
    staged = {}
    for name, key, seed in (("a", "vid-a", 1), ("b", "vid-b", 2), ("c", "vid-c", 3), ("b2", "vid-b", 5)):
        p = make_partition(src / name, key, seed=seed, task_prefix="again " if name == "b2" else "")
        stage(p, tmp_path / "staged" / name / key)
        staged[name] = load_staged(tmp_path / "staged" / name / key)
    with store.working_copy(root, publish_last=("meta/",)) as local:
        assemble(local, [staged["a"], staged["b"]], val_fraction=0.0)
    for name in ("c", "b2"):
        store.fs.put(str(staged[name].path) + "/", store.join("staging", name) + "/", recursive=True)
    incremental.append_partition(store.fs, root, store.join("staging", "c"), tmp_path / "s0")
    videos = _etags(store.fs, root, ".mp4")  # slots 0 (a), 1 (b), 2 (c)
    assert len(videos) == 3

    read: list[str] = []
    real = store.fs

    class Reads(Recorder):
        def cat_file(self, path, *a, **kw):
            read.append(path)
            return real.cat_file(path, *a, **kw)

        def get_file(self, rpath, lpath, **kw):
            read.append(rpath)
            return real.get_file(rpath, lpath, **kw)

        def open(self, path, *a, **kw):
            read.append(path)
            return real.open(path, *a, **kw)

    fs = Reads(real)
    res = incremental.replace_partition(fs, root, store.join("staging", "b2"), tmp_path / "s1")
    assert res.replaced == ["vid-b"] and res.data_written == ["vid-b", "vid-c"]
    assert not [p for p in read if p.endswith(".mp4") and p.startswith(root)]
    puts = [n for op, n in fs.ops if op == "put"]
    assert [n for n in puts if n.endswith(".mp4")] == ["file-004.mp4"]  # vid-b's new video, nothing else
    assert [n for n in puts if n.endswith(".parquet")][:2] == ["file-003.parquet", "file-004.parquet"]  # c, b2
    assert puts[-1] == "ego_assets_header.json" and puts.count("info.json") == 1
    after = _etags(store.fs, root, ".mp4")
    assert {p: after[p] for p in videos if not p.endswith("file-001.mp4")} == {
        p: e for p, e in videos.items() if not p.endswith("file-001.mp4")}
    assert not [p for p in after if p.endswith("file-001.mp4")]  # the old vid-b video is deleted

    fs.ops.clear()
    read.clear()
    kept = dict(after)
    res = incremental.remove_partition(fs, root, "vid-a")
    assert res.removed == ["vid-a"] and res.n_episodes == staged["b2"].n_episodes + staged["c"].n_episodes
    assert not [p for p in read if p.endswith(".mp4")]
    assert not [n for op, n in fs.ops if op == "put" and n.endswith(".mp4")]
    assert [n for op, n in fs.ops if op == "rm" and n.endswith(".mp4")] == ["file-000.mp4"]
    after = _etags(store.fs, root, ".mp4")
    assert after == {p: e for p, e in kept.items() if not p.endswith("file-000.mp4")}

    download = tmp_path / "download"
    store.fs.get(root, str(download), recursive=True)
    if not (download / "meta").exists():
        download = download / "ego_assets"
    check_consistent(download)
    full = tmp_path / "full"
    assemble(full, [staged["b2"], staged["c"]], val_fraction=0.0)
    assert_same_dataset(download, full)
    load_check(download, full)


def test_lerobot_dataset_step_replaces_and_removes_in_the_bucket(s3, tmp_path, monkeypatch):
    """The ``lerobot_dataset`` step on an object-store home: a re-staged video is replaced and a video
    that left is removed in place (no working copy: the other videos' objects keep their ETags); the
    ``episodes`` table follows the renumbering; the dataset loads with LeRobot."""
    import dagster as dg
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    import datasets.config
    from ego_assets.defs import dataset
    from ego_assets.defs.runner import now
    from ego_assets.defs.settings import EgoStorage
    from ego_assets_tests.defs.test_dataset_shards import SIZE, _add

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    home = f"s3://{BUCKET}/step-change"
    monkeypatch.setenv("EGO_ASSETS_HOME", home)
    monkeypatch.setenv("EGO_ASSETS_DATASET_IMAGE_SIZE", "x".join(map(str, SIZE)))
    monkeypatch.delenv("EGO_ASSETS_DATASET_SHARD", raising=False)
    store = Store(home)
    n = {k: _add(store, tmp_path / k, k, "lab", seed) for k, seed in (("v-a", 1), ("v-b", 2), ("v-c", 3))}

    def materialize() -> dict:
        r = dg.materialize([dataset.lerobot_dataset], resources={"ego": EgoStorage()})
        assert r.success
        valid = [e for e in r.get_asset_check_evaluations() if e.check_name == "lerobot_dataset_valid"]
        assert valid and all(e.passed for e in valid)
        return {k: getattr(v, "value", v) for k, v in r.asset_materializations_for_node("lerobot_dataset")[0]
                .metadata.items()}

    def dataset_version() -> str:
        return store.lineage("lerobot_dataset", "dataset")[-1]["data_version"]

    materialize()
    versions = [dataset_version()]
    root = dataset.dataset_dir(store)
    videos = _etags(store.fs, root, ".mp4")
    n["v-b"] = _add(store, tmp_path / "again", "v-b", "lab", 7)  # re-staged: another version
    m = materialize()
    versions.append(dataset_version())
    assert m["appended"] and m["replaced"] == 1 and m["added"] == 0 and m["removed"] == 0
    assert m["episodes"] == sum(n.values())
    after = _etags(store.fs, root, ".mp4")
    assert len(after) == 3 and len(set(after) & set(videos)) == 2
    assert all(after[p] == videos[p] for p in set(after) & set(videos))  # the other two: the same objects

    store.write_lineage(dict(partition_key="v-a", asset=dataset.EPISODES_ASSET, run_id="t2", code_version="2",
                             data_version=None, upstream=None, params=None, status="failed", error="gone",
                             started_at=now(), finished_at=now()))
    kept = _etags(store.fs, root, ".mp4")
    m = materialize()
    versions.append(dataset_version())
    assert all(versions) and len(set(versions)) == 3  # each change in place is a new data version
    assert m["appended"] and m["removed"] == 1 and m["episodes"] == n["v-b"] + n["v-c"]
    after = _etags(store.fs, root, ".mp4")
    assert len(after) == 2 and all(kept[p] == e for p, e in after.items())
    assert not store.exists(store.table_path("episodes", "v-a"))
    local = tmp_path / "download"
    store.fs.get(root + "/", str(local), recursive=True)
    ds = LeRobotDataset("local/ego_assets", root=local, video_backend="pyav")
    assert ds.meta.total_episodes == n["v-b"] + n["v-c"]
    meta = {(r["source/partition_key"], r["source/segment_id"], r["source/hand"]): r["episode_index"]
            for r in ds.meta.episodes.to_list()}
    table = {(pk, r["segment_id"], r["hand"]): r["episode_index"]
             for pk in ("v-b", "v-c") for r in store.read_table("episodes", pk).to_pylist()}
    assert table == meta  # the catalog's episodes rows carry the renumbered indices
    ds[len(ds) - 1]  # the last frame decodes
